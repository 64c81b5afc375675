"""Autocast: run matrix products in bfloat16/float16 and precision-sensitive ops in float32.

Inside ``with tensora.autocast(dtype=tensora.bfloat16):`` every op consults one
table, `POLICY`, keyed by its registered name (``Op`` subclasses, see
tensora/autograd/function.py) before it runs:

- ``LOWER`` ops (matmul/mm/bmm, linear, einsum, convolutions, attention) get their
  floating inputs cast to the autocast dtype: they are the FLOP-heavy ones, and a
  16-bit operand halves what they read;
- ``FLOAT32`` ops (losses, prod) get float16/bfloat16 inputs cast up to float32,
  because their results are summed over many elements and feed the gradient;
- every other op runs on whatever it is given; ops of mixed dtypes promote as usual
  (bfloat16 + float32 -> float32).

A function that tensora builds out of several ops but torch lists as one op
(mse_loss, scaled_dot_product_attention) is decorated with ``@autocast_op(name)``:
its arguments are cast once by the same table and its body runs with autocast off.

The table is torch's CPU autocast lists (aten/src/ATen/autocast_mode.cpp,
``TORCH_LIBRARY_IMPL(aten, AutocastCPU, m)``) restricted to ops tensora has. Like
torch's CPU kernels, tensora's reductions, softmax and norms already accumulate
16-bit inputs in float32 and round once (see tensora/ops/reduce.py), so they are
left alone here too, exactly as torch leaves them on CPU. float64 tensors are never
cast and only CPU tensors are, as in torch's CPU autocast.

Casts go through the differentiable ``x.to(dtype)``, so a float32 parameter used
by a bfloat16 matmul gets its gradient back in float32. Within one (outermost)
autocast region, the low-precision copy of each float32 leaf that requires grad
(a parameter) is made once and reused by every op that reads it, as torch does;
the cache is dropped when the outermost region exits.

The state is per thread: autocast entered in one thread does not change ops run
by another.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from typing import Any, Callable

from .. import dtypes as dt
from ..autograd.grad_mode import STATE as GRAD_STATE
from ..device import CPU
from ..tensor import Tensor

LOWER = "lower"      # cast floating inputs to the autocast dtype
FLOAT32 = "float32"  # cast 16-bit (and 8-bit) floating inputs up to float32

# name -> policy. Keys are registered op names (tensora.autograd.OPS) and the names of
# functions that tensora builds out of several ops but torch's lists treat as one
# (mse_loss, scaled_dot_product_attention, ...): such a function is decorated with
# `@autocast_op("mse_loss")`.
POLICY: dict[str, str] = {
    # torch CPU "lower_precision_fp": conv1d/2d/3d, conv_transpose1d/2d/3d, mm, bmm, matmul,
    # baddbmm/addmm/addbmm, linear, scaled_dot_product_attention (einsum lowers to bmm there).
    # "matmul" is also what tensora.dot and outer run, which torch leaves in float32.
    "matmul": LOWER,
    "linear": LOWER,
    "einsum": LOWER,
    "conv": LOWER,
    "conv_transpose": LOWER,
    "sdpa_efficient": LOWER,
    "scaled_dot_product_attention": LOWER,
    "prelu": LOWER,
    # torch CPU "fp32": the losses and prod. Its list also has linear algebra, fft, cdist, 3-d
    # pooling, reflection/replication padding and more losses (margin_ranking, hinge_embedding,
    # soft_margin, triplet_margin, multi_margin, poisson_nll, ctc): add them as tensora gains them.
    "prod": FLOAT32,
    "cross_entropy": FLOAT32,
    "nll_loss": FLOAT32,
    "binary_cross_entropy": FLOAT32,
    "binary_cross_entropy_with_logits": FLOAT32,
    "mse_loss": FLOAT32,
    "l1_loss": FLOAT32,
    "smooth_l1_loss": FLOAT32,
    "huber_loss": FLOAT32,
    "kl_div": FLOAT32,
    "cosine_embedding_loss": FLOAT32,
    "bilinear": FLOAT32,  # torch CPU keeps it in float32 (tensora builds it from two einsums)
}

# Autocast dtypes CPU autocast supports (torch: bfloat16 and float16).
SUPPORTED = (dt.bfloat16, dt.float16)

# Inputs autocast may cast: floating, but never float64 (torch's `is_eligible`).
_ELIGIBLE = frozenset(d for d in dt.DTYPES.values() if d.is_floating_point and d is not dt.float64)


class _State(threading.local):
    """Per-thread autocast state; `dtype` is None while autocast is off in this thread."""

    dtype: dt.DType | None = None
    cache_enabled: bool = True
    # The thread's autocast dtype setting (torch.get_autocast_dtype): set by every region entered,
    # enabled or not, and what `autocast()` without a dtype takes.
    fast_dtype: dt.DType = dt.bfloat16

    def __init__(self) -> None:
        # (dtype, cache_enabled, fast_dtype) saved by each open region, innermost last: with-blocks nest
        # per thread, so one autocast object may be entered by several threads, or inside itself.
        self.saved: list[tuple] = []
        # (id(leaf), dtype, grad mode) -> (weakref to leaf, its array, its version, the cast)
        self.cache: dict[tuple, tuple] = {}


AUTOCAST = _State()


class _Active:
    """How many enabled autocast regions are open now, across all threads.

    Op.apply checks this first: a plain attribute read costs ~8 ns, the thread-local
    `AUTOCAST.dtype` ~45 ns, and every op pays the check. Only while some thread is
    inside autocast does an op look at its own thread's state (in autocast_inputs).
    """

    __slots__ = ("regions",)

    def __init__(self) -> None:
        self.regions = 0


ACTIVE = _Active()
_ACTIVE_LOCK = threading.Lock()  # `regions += 1` is a read and a write: threads must not interleave


def autocast_inputs(op: type | str, inputs: tuple) -> tuple:
    """`inputs` cast as `POLICY` says for `op` (an Op class or a registered name), if this thread is
    inside autocast. Non-tensors, non-floating and float64 tensors pass through unchanged."""
    low = AUTOCAST.dtype
    if low is None:
        return inputs
    policy = POLICY.get(op if op.__class__ is str else op.name)
    if policy is None:
        return inputs
    target = low if policy is LOWER else dt.float32
    out = None
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.dtype is not target and x.dtype in _ELIGIBLE and x.device is CPU:
            if out is None:
                out = list(inputs)
            out[i] = _cached_cast(x, target) if policy is LOWER else x.to(target)
    return inputs if out is None else tuple(out)


def _cached_cast(x: Tensor, target: dt.DType) -> Tensor:
    """x.to(target), reusing the cast of a float32 parameter made earlier in this autocast region."""
    if not (AUTOCAST.cache_enabled and x._requires_grad and x.grad_fn is None and x._base is None
            and x.dtype is dt.float32):
        return x.to(target)
    # A cast made under no_grad has no graph; keying on the grad mode keeps it out of
    # recorded forwards (torch's cache does not, and hands such casts to backward).
    key = (id(x), target, GRAD_STATE.enabled)
    hit = AUTOCAST.cache.get(key)
    # The leaf must be the same object (ids are reused once it dies), with the same array
    # (`.data =` swaps it) at the same version (in-place updates, e.g. an optimizer step).
    if hit is not None and hit[0]() is x and hit[1] is x._data and hit[2] == x._version:
        return hit[3]
    y = x.to(target)
    AUTOCAST.cache[key] = (weakref.ref(x), x._data, x._version, y)
    return y


def autocast_op(name: str) -> Callable[[Callable], Callable]:
    """Decorator for a function built from several ops that autocast should treat as the one op `name`.

    Inside autocast, the function's tensor arguments (positional and keyword) are cast as
    POLICY[name] says, and its body runs with autocast off, as the body of an op on
    torch's autocast lists runs below the autocast dispatch key: mse_loss's subtraction
    stays in float32, attention's internal products are not cast down a second time.
    Outside autocast it calls the function unchanged.

    >>> import tensora
    >>> @autocast_op("mse_loss")
    ... def squared_error(a, b):
    ...     return ((a - b) ** 2).mean()
    >>> with autocast(dtype=tensora.bfloat16):
    ...     squared_error(tensora.ones(3, dtype=tensora.bfloat16), tensora.zeros(3)).dtype
    tensora.float32
    """
    if name not in POLICY:
        raise KeyError(f"autocast_op: {name!r} has no entry in tensora.amp.POLICY")

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not ACTIVE.regions or AUTOCAST.dtype is None:
                return fn(*args, **kwargs)
            args = autocast_inputs(name, args)
            if kwargs:
                kwargs = dict(zip(kwargs, autocast_inputs(name, tuple(kwargs.values()))))
            with autocast(enabled=False):
                return fn(*args, **kwargs)
        return wrapper
    return decorate


class autocast:  # noqa: N801 - torch spelling
    """Context manager and decorator: run ops in mixed precision, as torch.autocast on CPU.

    device_type: "cpu" (tensora's autocast casts CPU tensors only). dtype: bfloat16 or
    float16; None (the default) takes the current autocast dtype (`get_autocast_dtype()`,
    bfloat16 unless an enclosing region set another), as torch does. enabled=False turns autocast off inside the region
    (for a float32 island within an autocast one). cache_enabled: reuse the low
    precision copy of each parameter within the region (default True).

    >>> import tensora
    >>> lin = tensora.nn.Linear(4, 2)
    >>> with tensora.autocast(dtype=tensora.bfloat16):
    ...     y = lin(tensora.ones(3, 4))
    >>> y.dtype
    tensora.bfloat16
    """

    def __init__(self, device_type: str = "cpu", dtype: Any = None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:
        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
        if device_type != "cpu":
            raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}': "
                               "tensora's autocast covers CPU tensors (device_type='cpu')")
        self.device = device_type
        self.fast_dtype = get_autocast_dtype(device_type) if dtype is None else dt.get_dtype(dtype)
        self._enabled = bool(enabled)
        self._cache_enabled = True if cache_enabled is None else bool(cache_enabled)
        if self._enabled and self.fast_dtype not in SUPPORTED:
            warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.\n"
                          "CPU Autocast only supports dtypes of tensora.bfloat16, tensora.float16 currently.",
                          stacklevel=2)
            self._enabled = False
        # What the decorator re-enters on each call: this object's settings, resolved now (as torch's
        # decorator re-enters the same object), not the dtype current when the function is called.
        self._args = (device_type, self.fast_dtype, self._enabled, cache_enabled)

    def __enter__(self) -> "autocast":
        AUTOCAST.saved.append((AUTOCAST.dtype, AUTOCAST.cache_enabled, AUTOCAST.fast_dtype))
        AUTOCAST.dtype = self.fast_dtype if self._enabled else None
        AUTOCAST.cache_enabled = self._cache_enabled
        AUTOCAST.fast_dtype = self.fast_dtype
        if self._enabled:
            with _ACTIVE_LOCK:
                ACTIVE.regions += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._enabled:
            with _ACTIVE_LOCK:
                ACTIVE.regions -= 1
        AUTOCAST.dtype, AUTOCAST.cache_enabled, AUTOCAST.fast_dtype = AUTOCAST.saved.pop()
        if not AUTOCAST.saved:  # the outermost region ends: drop its weight casts
            AUTOCAST.cache.clear()

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # A fresh context per call, so recursive and concurrent calls each restore their own state.
            with autocast(*self._args):
                return fn(*args, **kwargs)
        return wrapper


def is_autocast_enabled(device_type: str = "cpu") -> bool:
    """True inside an enabled autocast region of this thread (torch.is_autocast_enabled)."""
    return device_type == "cpu" and AUTOCAST.dtype is not None


def get_autocast_dtype(device_type: str = "cpu") -> dt.DType:
    """The thread's autocast dtype: that of the innermost region entered, enabled or not, bfloat16
    outside any (torch.get_autocast_dtype)."""
    return AUTOCAST.fast_dtype
