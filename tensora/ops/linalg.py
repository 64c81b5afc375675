"""Matrix products: matmul / @, mm, bmm, dot, outer, linear and einsum.

Every product runs through `mm_array`, which keeps the work in one BLAS call
where plain `numpy.matmul` would not: a stack of rows times one matrix
((B, T, K) @ (K, N), the shape of every Linear layer) is flattened into a single
(B*T, K) @ (K, N) GEMM, because NumPy loops over the batch with one small GEMM
each (measured 3-25x slower); float16/bfloat16/float8 are multiplied in float32
and rounded once, as PyTorch's CPU kernels do (NumPy's float16 matmul has no
BLAS path at all and is ~200x slower). Transposed operands are passed as views:
NumPy hands BLAS the transpose flag instead of copying.

einsum contracts two operands through the same batched GEMM: `numpy.einsum`
with optimize=True only reaches BLAS through tensordot, which cannot keep batch
letters, so 'bhqd,bhkd->bhqk' would run 50x slower in its C loops. Backward of
einsum is einsum (of the output gradient and the other operands), so gradients
of every order come for free.
"""

from __future__ import annotations

import math
import string
from typing import Any

from .. import dtypes as dt
from ..autograd.function import Op
from ..errors import ShapeError, fmt_shape
from ..tensor import Tensor
from .conversion import cast_array
from .overrides import call_override, override_for
from .registry import binary_operator, register
from .shape import sum_to

# Floating types narrower than float32: BLAS has no kernels for them.
_NARROW = {d.np_dtype: d for d in dt.DTYPES.values() if d.is_floating_point and d.itemsize < 4}


def _widen(a: Any) -> Any:
    return cast_array(a, dt.float32) if a.dtype in _NARROW else a


def mm_array(xp: Any, a: Any, b: Any, bias: Any = None) -> Any:
    """a @ b (+ bias) on arrays of >= 2 dims, at BLAS speed (see the module docstring)."""
    narrow = _NARROW.get(a.dtype) or _NARROW.get(b.dtype)
    if narrow is not None:
        a, b = _widen(a), _widen(b)
        bias = None if bias is None else _widen(bias)
    if a.ndim > 2 and a.ndim >= b.ndim and all(s == 1 for s in b.shape[:-2]):
        lead = a.shape[:-1]
        out = xp.matmul(a.reshape(math.prod(lead), a.shape[-1]), b.reshape(b.shape[-2:]))
        out = out.reshape(lead + (b.shape[-1],))
    else:
        out = xp.matmul(a, b)
    if bias is not None:
        out += bias
    return out if narrow is None else cast_array(out, narrow)


def _flat_rows(t: Tensor) -> Tensor:
    """(..., k) -> (prod(...), k), a view when t is contiguous."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


class MatMul(Op, name="matmul"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        need = ctx.needs_input_grad
        if need:  # each gradient needs only the other operand: keep just that, as torch's mm
            ctx.shapes = (a.shape, b.shape)
            ctx.save(a if need[1] else None, b if need[0] else None)
        return mm_array(ctx.xp, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        sa, sb = ctx.shapes
        need = ctx.needs_input_grad
        ga = sum_to(MatMul.apply(g, b.mT), sa) if need[0] else None
        gb = None
        if need[1]:
            if len(sa) > 2 and len(sa) >= len(sb) and all(s == 1 for s in sb[:-2]):
                # One matrix shared by every row of the batch: its gradient is a single
                # (K, rows) @ (rows, N) GEMM, not a (B, K, N) stack summed afterwards.
                gb = MatMul.apply(_flat_rows(a).mT, _flat_rows(g)).reshape(sb)
            else:
                gb = sum_to(MatMul.apply(a.mT, g), sb)
        return ga, gb


def _check_tensors(name: str, *xs: Any) -> None:
    if not all(isinstance(x, Tensor) for x in xs):
        raise TypeError(f"{name} expects tensors, got " + ", ".join(type(x).__name__ for x in xs))


@register()
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy/PyTorch semantics for 1-D, 2-D and batched operands.

    >>> import tensora
    >>> (tensora.ones(2, 3) @ tensora.ones(3)).tolist()
    [3.0, 3.0]
    """
    if (owner := override_for(a, b)) is not None:
        return call_override(owner, matmul, (a, b), {})
    _check_tensors("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: both arguments need at least 1 dimension, got shapes "
                         f"{fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ShapeError(f"matmul: shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} cannot be multiplied "
                         f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
    a2 = a.unsqueeze(0) if a.ndim == 1 else a
    b2 = b.unsqueeze(-1) if b.ndim == 1 else b
    out = MatMul.apply(a2, b2)
    if b.ndim == 1:
        out = out.squeeze(-1)
    if a.ndim == 1:
        out = out.squeeze(-2 if b.ndim > 1 else -1)
    return out


binary_operator("matmul", matmul)


@register()
def mm(a: Tensor, b: Tensor) -> Tensor:
    """(n, k) @ (k, m) -> (n, m); both operands must be 2-D (no broadcasting), as torch.mm."""
    _check_tensors("mm", a, b)
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"mm: expected 2-D tensors, got shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ShapeError(f"mm: shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} cannot be multiplied "
                         f"({a.shape[1]} != {b.shape[0]})")
    return MatMul.apply(a, b)


@register()
def bmm(a: Tensor, b: Tensor) -> Tensor:
    """(B, n, k) @ (B, k, m) -> (B, n, m); 3-D operands with equal batch sizes, as torch.bmm."""
    _check_tensors("bmm", a, b)
    if a.ndim != 3 or b.ndim != 3:
        raise ShapeError(f"bmm: expected 3-D tensors, got shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ShapeError(f"bmm: shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} cannot be multiplied "
                         "(batch sizes must be equal and a.shape[2] must equal b.shape[1])")
    return MatMul.apply(a, b)


@register()
def dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner product of two 1-D tensors of equal length (a 0-d tensor), as torch.dot."""
    _check_tensors("dot", a, b)
    if a.ndim != 1 or b.ndim != 1 or a.shape[0] != b.shape[0]:
        raise ShapeError(f"dot: expected two 1-D tensors of equal length, got shapes "
                         f"{fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
    return matmul(a, b)


@register(method=("outer", "ger"))
def outer(a: Tensor, b: Tensor) -> Tensor:
    """Outer product a[i] * b[j] of two 1-D tensors: (n,), (m,) -> (n, m).

    A rank-1 GEMM, so both gradients are matrix-vector products (no broadcast sums).
    """
    _check_tensors("outer", a, b)
    if a.ndim != 1 or b.ndim != 1:
        raise ShapeError(f"outer: expected 1-D tensors, got shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
    return MatMul.apply(a.unsqueeze(1), b.unsqueeze(0))


# -- linear ----------------------------------------------------------------------------

class Linear(Op, name="linear"):
    """x @ weight.T + bias in one GEMM with the bias added in place (torch.nn.functional.linear)."""

    promote = True

    @staticmethod
    def forward(ctx, x, w, b=None):
        need = ctx.needs_input_grad
        if need:  # d/dx needs only w and d/dw only x: a frozen layer keeps no activation alive
            ctx.save(x if need[1] else None, w if need[0] else None)
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        out = mm_array(ctx.xp, x2, w.T, b)  # w.T is a view: BLAS reads it transposed
        return out.reshape(w.shape[:1]) if x.ndim == 1 else out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved
        need = ctx.needs_input_grad
        gx = matmul(g, w) if need[0] else None
        g2 = _flat_rows(g.reshape(1, -1) if g.ndim == 1 else g)
        gw = MatMul.apply(g2.mT, _flat_rows(x.reshape(1, -1) if x.ndim == 1 else x)) if need[1] else None
        gb = g2.sum(0) if len(need) > 2 and need[2] else None
        return gx, gw, gb


@register(method=False)
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = input @ weight.T + bias, input (..., in_features), weight (out, in), bias (out,).

    >>> import tensora
    >>> tensora.linear(tensora.ones(4, 3), tensora.ones(2, 3), tensora.zeros(2)).shape
    tensora.Size([4, 2])
    """
    if (owner := override_for(input, weight, bias)) is not None:
        return call_override(owner, linear, (input, weight, bias), {})
    _check_tensors("linear", input, weight)
    if weight.ndim != 2 or input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ShapeError(f"linear: input of shape {fmt_shape(input.shape)} and weight of shape "
                         f"{fmt_shape(weight.shape)} do not fit (need weight (out_features, "
                         f"{input.shape[-1] if input.ndim else '?'}))")
    if bias is None:
        return Linear.apply(input, weight)
    _check_tensors("linear", bias)
    if tuple(bias.shape) != (weight.shape[0],):
        raise ShapeError(f"linear: bias of shape {fmt_shape(bias.shape)} does not match weight of shape "
                         f"{fmt_shape(weight.shape)} (need [{weight.shape[0]}])")
    return Linear.apply(input, weight, bias)


# -- einsum -------------------------------------------------------------------------------

_LETTERS = string.ascii_uppercase + string.ascii_lowercase  # ASCII order, for the implicit output


def _parse_einsum(equation: str, shapes: list[tuple]) -> tuple[tuple[str, ...], str]:
    """Explicit one-letter-per-dim terms: '...' becomes letters, right-aligned as in broadcasting."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum(): the equation {equation!r} has {len(terms)} operand(s) but "
                         f"{len(shapes)} tensor(s) were given")
    for t in terms + ([rhs] if arrow else []):
        rest = t.replace("...", "", 1)
        if any(c not in _LETTERS for c in rest):
            raise ValueError(f"einsum(): invalid subscript {t!r} in {equation!r} (letters a-z, A-Z and one "
                             "'...' per operand)")
    ell_lens = []
    for i, (t, shape) in enumerate(zip(terms, shapes)):
        n = len(t.replace("...", ""))
        if len(shape) < n or ("..." not in t and len(shape) != n):
            raise ShapeError(f"einsum(): subscripts {t!r} do not match operand {i} of shape {fmt_shape(shape)}")
        ell_lens.append(len(shape) - n)
    free = [c for c in _LETTERS if c not in eq]
    ell = "".join(free[:max(ell_lens, default=0)])
    inputs = tuple(t.replace("...", ell[len(ell) - n:] if n else "") for t, n in zip(terms, ell_lens))
    if arrow:
        output = rhs.replace("...", ell)
    else:
        letters = "".join(t.replace("...", "") for t in terms)
        output = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    joined = "".join(inputs)
    for c in output:
        if c not in joined or output.count(c) > 1:
            raise ValueError(f"einsum(): output subscript {c!r} in {equation!r} "
                             + ("appears more than once" if c in joined else "does not appear in the inputs"))
    return inputs, output


def _letter_sizes(inputs: tuple[str, ...], shapes: list[tuple], equation: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for i, (term, shape) in enumerate(zip(inputs, shapes)):
        own: dict[str, int] = {}
        for c, s in zip(term, shape):
            if own.setdefault(c, s) != s:
                raise ShapeError(f"einsum(): subscript {c!r} repeated in operand {i} ({equation!r}) needs equal "
                                 f"sizes, got shape {fmt_shape(shape)}")
            prev = sizes.get(c)
            if prev is None or prev == 1:
                sizes[c] = s
            elif s != 1 and s != prev:
                raise ShapeError(f"einsum(): subscript {c!r} has size {s} in operand {i} of shape "
                                 f"{fmt_shape(shape)} but size {prev} elsewhere ({equation!r})")
    return sizes


def contract(xp: Any, inputs: tuple[str, ...], output: str, arrays: tuple) -> Any:
    """einsum on arrays with explicit terms; two operands go through batched GEMM."""
    narrow = next((_NARROW[a.dtype] for a in arrays if a.dtype in _NARROW), None)
    if narrow is not None:
        arrays = tuple(_widen(a) for a in arrays)
    if len(arrays) == 2 and all(len(set(t)) == len(t) for t in inputs):
        out = _contract_pair(xp, inputs[0], inputs[1], output, arrays[0], arrays[1])
    else:
        out = xp.einsum(",".join(inputs) + "->" + output, *arrays, optimize=len(arrays) > 2)
        if len(arrays) == 1 and xp.may_share_memory(out, arrays[0]):
            out = out.copy()  # einsum returns views for 'ij->ji' / 'ii->i'; this op owns its output
    return out if narrow is None else cast_array(xp.asarray(out), narrow)


def _contract_pair(xp: Any, ta: str, tb: str, out: str, a: Any, b: Any) -> Any:
    # Letters only one operand has and the output lacks are summed out first.
    drop_a = tuple(i for i, c in enumerate(ta) if c not in tb and c not in out)
    if drop_a:
        a, ta = a.sum(axis=drop_a, dtype=a.dtype), "".join(c for i, c in enumerate(ta) if i not in drop_a)
    drop_b = tuple(i for i, c in enumerate(tb) if c not in ta and c not in out)
    if drop_b:
        b, tb = b.sum(axis=drop_b, dtype=b.dtype), "".join(c for i, c in enumerate(tb) if i not in drop_b)
    size = dict(zip(ta, a.shape))
    size.update(zip(tb, b.shape))
    batch = [c for c in out if c in ta and c in tb]
    summed = [c for c in ta if c in tb and c not in out]
    keep_a = [c for c in ta if c not in tb]
    keep_b = [c for c in tb if c not in ta]
    bshape = tuple(size[c] for c in batch)
    m = math.prod(size[c] for c in keep_a)
    k = math.prod(size[c] for c in summed)
    n = math.prod(size[c] for c in keep_b)
    # (batch..., M, K) @ (batch..., K, N): transposes are views, reshapes copy only when strides demand.
    a3 = a.transpose([ta.index(c) for c in batch + keep_a + summed]).reshape(bshape + (m, k))
    b3 = b.transpose([tb.index(c) for c in batch + summed + keep_b]).reshape(bshape + (k, n))
    r = mm_array(xp, a3, b3).reshape(bshape + tuple(size[c] for c in keep_a + keep_b))
    order = batch + keep_a + keep_b
    return r.transpose([order.index(c) for c in out])


class Einsum(Op, name="einsum"):
    promote = True

    @staticmethod
    def forward(ctx, *arrays, inputs, output):
        ctx.save(*arrays)
        ctx.terms = (inputs, output)
        return contract(ctx.xp, inputs, output, arrays)

    @staticmethod
    def backward(ctx, g):
        ops = ctx.saved
        return tuple(_einsum_grad(ctx, g, ops, i) if need else None
                     for i, need in enumerate(ctx.needs_input_grad))


def _einsum_grad(ctx: Any, g: Tensor, ops: tuple, i: int) -> Tensor:
    """d out / d ops[i] . g = einsum(g, the other operands -> term i).

    A letter repeated in term i (a diagonal, 'ii->i') gets a fresh letter tied to
    the first by an identity matrix; a letter nothing else carries (summed inside
    operand i alone, 'ij->i') is left out and the result broadcast along it.
    """
    inputs, output = ctx.terms
    term, shape = inputs[i], ops[i].shape
    others = [j for j in range(len(ops)) if j != i]
    fresh = iter(c for c in _LETTERS if c not in output and c not in "".join(inputs))
    terms, tensors = [output] + [inputs[j] for j in others], [g] + [ops[j] for j in others]
    target: list[str] = []
    for c, n in zip(term, shape):
        if c in target:
            f = next(fresh)
            eye = ctx.xp.eye(n, dtype=g._data.dtype)
            terms.append(c + f)
            tensors.append(Tensor(eye, device=g.device))
            target.append(f)
        else:
            target.append(c)
    present = set("".join(terms))
    kept = "".join(c for c in target if c in present)
    grad = Einsum.apply(*tensors, inputs=tuple(terms), output=kept)
    if len(kept) < len(target):
        grad = grad.reshape(tuple(s if c in present else 1 for c, s in zip(target, shape))).expand(shape)
    return grad


@register(method=False)
def einsum(equation: Any, *operands: Any) -> Tensor:
    """Einstein summation, as torch.einsum: 'ij,jk->ik', 'bhqd,bhkd->bhqk', 'ii->i', '...ij->...ji'.

    Without '->' the output holds the '...' dims and then every letter seen once, in
    ASCII order. Dims of size 1 broadcast against the same letter elsewhere. The
    sublist form einsum(a, [0, 1], b, [1, 2], [0, 2]) is accepted too.

    >>> import tensora
    >>> tensora.einsum("ij,jk->ik", tensora.ones(2, 3), tensora.ones(3, 4)).shape
    tensora.Size([2, 4])
    """
    if not isinstance(equation, str):
        equation, operands = _sublist_equation((equation,) + operands)
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise ValueError("einsum(): must provide at least one operand")
    _check_tensors("einsum", *operands)
    shapes = [tuple(x.shape) for x in operands]
    inputs, output = _parse_einsum(equation, shapes)
    sizes = _letter_sizes(inputs, shapes, equation)
    ops = []
    for x, term in zip(operands, inputs):
        full = tuple(sizes[c] for c in term)
        ops.append(x.expand(full) if full != tuple(x.shape) else x)  # broadcast size-1 dims (a view)
    return Einsum.apply(*ops, inputs=inputs, output=output)


def _sublist_equation(args: tuple) -> tuple[str, tuple]:
    """einsum(op0, sub0, op1, sub1, ..., [out]) -> ('ab,bc->ac', operands); ints 0-25 are a-z, 26-51 A-Z."""
    n = len(args) // 2
    ops, subs = args[0:2 * n:2], args[1:2 * n:2]

    def letters(sub: Any) -> str:
        return "".join("..." if s is Ellipsis else _LETTERS[26 + s] if s < 26 else _LETTERS[s - 26] for s in sub)

    eq = ",".join(letters(s) for s in subs)
    if len(args) % 2:
        eq += "->" + letters(args[-1])
    return eq, tuple(ops)
