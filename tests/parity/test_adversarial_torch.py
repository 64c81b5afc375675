"""Adversarial parity with PyTorch: the same program run with `lib = torch` and `lib = tensora` must give
the same values and the same input gradients (or both refuse it).

The cases are ones an earlier version got wrong (see tests/ops/test_adversarial.py for the NumPy /
finite-difference side): cross_entropy on logits in a non-C memory order (a sequence model's
(N, L, C).permute(0, 2, 1)), pow's gradients at 0 ** 0 and for negative bases, in-place writes through
views (CopySlices, regenerated stale views, retain_grad after the write), in-place writes to an input
that a frozen operand's backward does not read, torch's foreach / fused optimizer keywords, custom
Functions with setup_context / mark_dirty, and .grad assignment of another shape. Strided inputs to the
common layers are swept as well.
"""

import numpy as np
import pytest

import tensora

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOL = {"float64": 1e-10, "float32": 2e-5}


def run_both(program, arrays, dtype="float64", requires_grad=None, tol=None):
    """program(lib, *tensors) -> tensor or tuple; compare outputs and the float inputs' gradients."""
    tol = TOL[dtype] if tol is None else tol
    results = {}
    for lib in (torch, tensora):
        ts = []
        for i, a in enumerate(arrays):
            a = np.asarray(a)
            rg = a.dtype.kind == "f" and (requires_grad is None or requires_grad[i])
            ts.append(lib.tensor(a.astype(dtype) if a.dtype.kind == "f" else a, requires_grad=rg))
        out = program(lib, *ts)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        rng = np.random.default_rng(5)
        loss = 0
        for o in outs:
            if o.dtype.is_floating_point and o.requires_grad:
                w = rng.standard_normal(tuple(o.shape)).astype(dtype)
                loss = loss + (o * lib.tensor(w)).sum()
        if not isinstance(loss, int):
            loss.backward()
        results[lib.__name__] = ([o.detach().numpy().copy() for o in outs],
                                 [None if t.grad is None else t.grad.numpy().copy() for t in ts])
    (out_t, grad_t), (out_a, grad_a) = results["torch"], results["tensora"]
    for o, r in zip(out_a, out_t):
        assert o.shape == r.shape
        np.testing.assert_allclose(o, r, rtol=tol, atol=tol)
    for g, r in zip(grad_a, grad_t):
        assert (g is None) == (r is None)
        if r is not None:
            np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


# -- cross_entropy on strided logits --------------------------------------------------------------

CE_CASES = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2},
    {"ignore_index": 1, "label_smoothing": 0.1, "weight": np.array([0.3, 1.0, 2.0, 0.5])},
    {"reduction": "none", "weight": np.array([0.3, 1.0, 2.0, 0.5]), "label_smoothing": 0.3},
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kw", CE_CASES, ids=["mean", "sum", "none", "smoothing", "weight-ignore-smoothing",
                                              "none-weight-smoothing"])
def test_cross_entropy_sequence_logits_permuted(kw, dtype):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 6, 4))                    # (N, L, C) from a sequence model
    target = rng.integers(0, 4, (3, 6))

    def program(lib, x, t):
        args = {k: (lib.tensor(v.astype(dtype)) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        return lib.nn.functional.cross_entropy(x.permute(0, 2, 1), t, **args)

    run_both(program, [logits, target], dtype)


def test_cross_entropy_channels_last_image_logits():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 5, 4, 3))                 # (N, H, W, C)
    target = rng.integers(0, 3, (2, 5, 4))
    run_both(lambda lib, x, t: lib.nn.functional.cross_entropy(x.permute(0, 3, 1, 2), t, label_smoothing=0.1),
             [logits, target])


# -- pow at the edges -----------------------------------------------------------------------------

def test_pow_gradients_at_zero_and_negative_bases():
    base = np.array([0.0, 0.0, 2.0, -2.0, 0.0, 3.0])
    expo = np.array([0.0, 2.0, 0.0, 2.0, 0.5, 1.5])
    run_both(lambda lib, a, b: a ** b, [base, expo])
    run_both(lambda lib, a: (a ** 0, a ** 1.0, a ** 2), [base])
    run_both(lambda lib, b: (0.0 ** b, 2.0 ** b), [expo])


# -- in-place writes through views ----------------------------------------------------------------

def _view_programs():
    def mul_add_through_views(lib, x, w):
        h = x * 1
        h[:, 1:].mul_(2)
        h.t()[0].add_(w)
        return h * h

    def relu_inplace_slice(lib, x, w):
        h = x * 3
        lib.nn.functional.relu(h[:, :2], inplace=True)
        return h + w.sum()

    def setitem_flat_view(lib, x, w):
        h = x * 1
        v = h.view(-1)
        v[::2] = v[1::2] * 2
        return h.exp()

    def copy_and_masked_fill(lib, x, w):
        h = x * 1
        h.narrow(1, 1, 1).copy_(w.reshape(3, 1))
        col = h[:, 0]
        col.masked_fill_(col > 0, 0.0)
        return h.sin()

    def stale_views_regenerated(lib, x, w):
        h = x * 1
        col, row = h[:, 1], h[2]
        h[0].mul_(5)
        h.add_(w.reshape(3, 1))
        return col * 3 + row.sum()

    def view_of_view(lib, x, w):
        h = x.t() * 2                    # Fortran-ordered product
        r = h[1]
        r[1:3].mul_(w[:2])
        return h, r * 1

    def chained(lib, x, w):
        h = x * 1
        v = h[1]
        v += w.sum()
        v *= 3
        h.unsqueeze(0)[0, 2].zero_()
        return h.tanh()

    def index_add_into_view(lib, x, w):
        h = x * 1
        h[:, 2:].index_add_(0, lib.tensor([0, 2, 0]), lib.stack([w, w * 2], 1))
        return h

    return [mul_add_through_views, relu_inplace_slice, setitem_flat_view, copy_and_masked_fill,
            stale_views_regenerated, view_of_view, chained, index_add_into_view]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("program", _view_programs(), ids=lambda f: f.__name__)
def test_in_place_writes_through_views(program, dtype):
    rng = np.random.default_rng(2)
    run_both(program, [rng.standard_normal((3, 4)), rng.standard_normal(3)], dtype)


def test_retain_grad_after_in_place_writes():
    for write in ("base", "view"):
        grads = {}
        for lib in (torch, tensora):
            x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
            h = x * 2
            h.retain_grad()
            if write == "base":
                h.mul_(3)
            else:
                h[1:].mul_(3)
            (h * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
            grads[lib.__name__] = (h.grad.tolist(), x.grad.tolist())
        assert grads["tensora"] == grads["torch"], write


def test_both_refuse_the_same_view_writes():
    for lib in (torch, tensora):
        leaf = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        with pytest.raises(RuntimeError):
            leaf[:2].mul_(2)                     # a view of a leaf that requires grad
        h = leaf * 2
        z = h * h                                # saves h
        h[0:1].mul_(2)
        with pytest.raises(RuntimeError, match="modified by an in-?place operation"):
            z.sum().backward()


# -- in-place writes to an input whose backward reads only the other operand ------------------------

@pytest.mark.parametrize("op", ["mul", "div", "rmul", "matmul", "linear"])
def test_write_after_an_op_that_does_not_save_it(op):
    def program(lib, x):
        h = x * 1
        const = lib.ones(4, 2, dtype=x.dtype) * 0.5
        out = {"mul": lambda: h * 3, "div": lambda: h / 4, "rmul": lambda: 2.5 * h,
               "matmul": lambda: h @ const, "linear": lambda: lib.nn.functional.linear(h, const.t())}[op]()
        h.add_(100)
        return out

    run_both(program, [np.random.default_rng(3).standard_normal((3, 4))])


# -- optimizers with torch's implementation keywords, 5 steps ----------------------------------------

OPTIMIZERS = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "foreach": False}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "maximize": True, "fused": None}),
    ("Adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1, "foreach": False, "capturable": False}),
    ("Adam", {"lr": 0.05, "maximize": True, "foreach": None, "differentiable": False}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True, "foreach": False}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "foreach": False, "capturable": False}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "foreach": None}),
]


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
def test_optimizer_steps_with_implementation_keywords(name, kw):
    rng = np.random.default_rng(4)
    init = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    grads = [[rng.standard_normal(p.shape) for p in init] for _ in range(5)]
    final = {}
    for lib in (torch, tensora):
        params = [lib.tensor(p, requires_grad=True) for p in init]
        opt = getattr(lib.optim, name)(params, **kw)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = lib.tensor(g)
            opt.step()
        final[lib.__name__] = [p.detach().numpy().copy() for p in params]
    for a, b in zip(final["tensora"], final["torch"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# -- strided inputs to common layers ----------------------------------------------------------------

LAYERS = {
    "conv2d": lambda lib, x: lib.nn.functional.conv2d(x, lib.ones(2, 3, 3, 3, dtype=x.dtype) * 0.1, padding=1),
    "layer_norm": lambda lib, x: lib.nn.functional.layer_norm(x, (5,)),
    "softmax_dim1": lambda lib, x: lib.softmax(x, 1),
    "log_softmax": lambda lib, x: lib.log_softmax(x, -1),
    "cross_entropy": lambda lib, x: lib.nn.functional.cross_entropy(x, lib.zeros(2, 4, 5, dtype=lib.int64) + 1),
    "nll_loss": lambda lib, x: lib.nn.functional.nll_loss(x.log_softmax(1), lib.zeros(2, 4, 5, dtype=lib.int64)),
    "sdpa": lambda lib, x: lib.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True),
    "group_norm": lambda lib, x: lib.nn.functional.group_norm(x, 3),
    "max_pool": lambda lib, x: lib.nn.functional.max_pool2d(x, 2, 1),
    "matmul": lambda lib, x: x @ x.transpose(-1, -2),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", list(LAYERS), ids=str)
def test_layers_on_strided_inputs(layer, dtype):
    base = np.random.default_rng(6).standard_normal((5, 4, 3, 2))

    def program(lib, x):  # x is (5, 4, 3, 2) contiguous; the layer sees a (2, 3, 4, 5) reversed-order view
        return LAYERS[layer](lib, x.permute(3, 2, 1, 0))

    run_both(program, [base], dtype, tol=1e-4 if dtype == "float32" else 1e-10)


# -- custom Functions in torch's newer styles, and .grad assignment ----------------------------------

def _functions(lib):
    class Cube(lib.autograd.Function):
        @staticmethod
        def forward(x, scale):
            return x * x * x * scale

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])
            ctx.scale = inputs[1]

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x * x * ctx.scale, None

    class Scale(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.mul_(2)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 2

    return Cube, Scale


def test_custom_functions_setup_context_and_mark_dirty():
    def program(lib, x):
        cube, scale = _functions(lib)
        h = cube.apply(x, 0.5)
        out = scale.apply(h)
        assert out is h
        return h * x

    run_both(program, [np.array([1.0, -2.0, 0.5])])


def test_gradient_assignment_checks_the_shape():
    for lib in (torch, tensora):
        w = lib.zeros(2, 3, requires_grad=True)
        with pytest.raises((RuntimeError, ValueError), match="assign a gradient of size"):
            w.grad = lib.ones(3)
