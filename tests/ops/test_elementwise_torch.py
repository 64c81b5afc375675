"""The elementwise family (arithmetic, pointwise math, activations, logical) against PyTorch.

Forward values and gradients on random inputs in float64 and float32, plus the
conventions where PyTorch picks a value (ties, kinks, bounds, rounding, sign of
nan) and the result dtypes for integer, bool and low-precision inputs.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import tensora  # noqa: E402

F = torch.nn.functional

# name -> (tensora function, torch function, input shapes, input range)
CASES = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (4,)], (-2, 2)),
    "sub_alpha": (lambda a, b: tensora.sub(a, b, alpha=3), lambda a, b: torch.sub(a, b, alpha=3),
                  [(3, 4), (3, 1)], (-2, 2)),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [(2, 3, 4), (3, 1)], (-2, 2)),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [(3, 4), (4,)], (0.5, 2)),
    "rdiv": (lambda a: 2.0 / a, lambda a: 2.0 / a, [(3, 4)], (0.5, 2)),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b, [(3, 4), (4,)], (0.5, 2)),
    "pow_scalar": (lambda a: a ** 3, lambda a: a ** 3, [(3, 4)], (-2, 2)),
    "rpow": (lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(3, 4)], (-2, 2)),
    "neg": (lambda a: -a, lambda a: -a, [(3, 4)], (-2, 2)),
    "exp": (tensora.exp, torch.exp, [(3, 4)], (-3, 3)),
    "log": (tensora.log, torch.log, [(3, 4)], (0.1, 3)),
    "sqrt": (tensora.sqrt, torch.sqrt, [(3, 4)], (0.1, 3)),
    "remainder": (lambda a, b: a % b, lambda a, b: a % b, [(3, 4), (4,)], (-3, 3)),
    "fmod": (tensora.fmod, torch.fmod, [(3, 4), (4,)], (-3, 3)),
    "abs": (tensora.abs, torch.abs, [(3, 4)], (-2, 2)),
    "log1p": (tensora.log1p, torch.log1p, [(3, 4)], (-0.9, 3)),
    "expm1": (tensora.expm1, torch.expm1, [(3, 4)], (-3, 3)),
    "rsqrt": (tensora.rsqrt, torch.rsqrt, [(3, 4)], (0.1, 3)),
    "reciprocal": (tensora.reciprocal, torch.reciprocal, [(3, 4)], (0.5, 3)),
    "sin": (tensora.sin, torch.sin, [(3, 4)], (-4, 4)),
    "cos": (tensora.cos, torch.cos, [(3, 4)], (-4, 4)),
    "erf": (tensora.erf, torch.erf, [(3, 4)], (-4, 4)),
    "square": (tensora.square, torch.square, [(3, 4)], (-2, 2)),
    "frac": (tensora.frac, torch.frac, [(3, 4)], (-3, 3)),
    "clamp": (lambda a: a.clamp(-0.5, 0.7), lambda a: a.clamp(-0.5, 0.7), [(3, 4)], (-2, 2)),
    "clamp_tensors": (tensora.clamp, torch.clamp, [(3, 4), (4,), (3, 1)], (-2, 2)),
    "clip_min": (lambda a, b: a.clip(min=b), lambda a, b: a.clip(min=b), [(3, 4), (3, 4)], (-2, 2)),
    "maximum": (tensora.maximum, torch.maximum, [(3, 4), (4,)], (-2, 2)),
    "minimum": (tensora.minimum, torch.minimum, [(3, 4), (3, 1)], (-2, 2)),
    "lerp": (lambda a, b: a.lerp(b, 0.3), lambda a, b: a.lerp(b, 0.3), [(3, 4), (4,)], (-2, 2)),
    "lerp_big_w": (lambda a, b: a.lerp(b, 0.8), lambda a, b: a.lerp(b, 0.8), [(3, 4), (3, 4)], (-2, 2)),
    "lerp_tensor_w": (tensora.lerp, torch.lerp, [(3, 4), (3, 4), (4,)], (-1, 1)),
    "sigmoid": (tensora.sigmoid, torch.sigmoid, [(3, 4)], (-6, 6)),
    "tanh": (tensora.tanh, torch.tanh, [(3, 4)], (-3, 3)),
    "relu": (tensora.relu, torch.relu, [(3, 4)], (-2, 2)),
    "leaky_relu": (lambda a: tensora.leaky_relu(a, 0.2), lambda a: F.leaky_relu(a, 0.2), [(3, 4)], (-2, 2)),
    "elu": (lambda a: tensora.elu(a, 0.7), lambda a: F.elu(a, 0.7), [(3, 4)], (-3, 3)),
    "gelu": (tensora.gelu, F.gelu, [(3, 4)], (-4, 4)),
    "gelu_tanh": (lambda a: tensora.gelu(a, approximate="tanh"), lambda a: F.gelu(a, approximate="tanh"),
                  [(3, 4)], (-4, 4)),
    "silu": (tensora.silu, F.silu, [(3, 4)], (-5, 5)),
    "softplus": (tensora.softplus, F.softplus, [(3, 4)], (-5, 5)),
    "softplus_beta": (lambda a: tensora.softplus(a, 3.0, 4.0), lambda a: F.softplus(a, 3.0, 4.0), [(3, 4)],
                      (-3, 3)),
    "mish": (tensora.mish, F.mish, [(3, 4)], (-5, 5)),
    # Tensor.where puts self first: x.where(condition, y) == where(condition, x, y)
    "where": (lambda a, b: tensora.where(a > b, a, b), lambda a, b: torch.where(a > b, a, b), [(3, 4), (4,)],
              (-2, 2)),
    "where_method": (lambda a, b: a.where(b > 0, b), lambda a, b: a.where(b > 0, b), [(3, 4), (4,)], (-2, 2)),
    "where_method_scalar": (lambda a: a.where(a < 0.5, 0.25), lambda a: a.where(a < 0.5, 0.25), [(3, 4)], (-2, 2)),
}

TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-6, atol=2e-6)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_backward_match_torch(name, dtype):
    fn, tfn, shapes, (low, high) = CASES[name]
    rng = np.random.default_rng(abs(hash(name)) % 2 ** 32)
    arrays = [rng.uniform(low, high, s).astype(dtype) for s in shapes]
    ours = [tensora.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, tout = fn(*ours), tfn(*theirs)
    assert out.dtype.name == str(tout.dtype).removeprefix("torch.")
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), **TOL[dtype])
    w = rng.standard_normal(tout.shape).astype(dtype)
    (out * tensora.tensor(w)).sum().backward()
    (tout * torch.tensor(w)).sum().backward()
    for x, tx in zip(ours, theirs):
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "softplus", "mish", "erf",
                                  "div", "pow", "lerp_tensor_w", "reciprocal"])
def test_second_derivatives_match_torch(name):
    fn, tfn, shapes, (low, high) = CASES[name]
    rng = np.random.default_rng(5)
    arrays = [rng.uniform(low, high, s) for s in shapes]
    ours = [tensora.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    (g,) = tensora.autograd.grad(fn(*ours).sum(), [ours[0]], create_graph=True)
    (tg,) = torch.autograd.grad(tfn(*theirs).sum(), [theirs[0]], create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), tg.detach().numpy(), rtol=1e-12, atol=1e-12)
    gg = tensora.autograd.grad((g * g).sum(), ours, allow_unused=True, materialize_grads=True)
    tgg = torch.autograd.grad((tg * tg).sum(), theirs, allow_unused=True, materialize_grads=True)
    for a, b in zip(gg, tgg):
        np.testing.assert_allclose(a.detach().numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def _both(values, dtype=None):
    if dtype is None:
        return tensora.tensor(values), torch.tensor(values)
    return tensora.tensor(values, dtype=getattr(tensora, dtype)), torch.tensor(values, dtype=getattr(torch, dtype))


CONVENTIONS = {
    # kinks, ties and bounds: which side gets the gradient
    "relu_at_0": (lambda m, x: m.relu(x), [-1.0, 0.0, -0.0, 2.0]),
    "abs_at_0": (lambda m, x: m.abs(x), [-1.0, 0.0, -0.0, 2.0]),
    "leaky_at_0": (lambda m, x: (F.leaky_relu if m is torch else tensora.leaky_relu)(x, 0.3), [-1.0, 0.0, 2.0]),
    "elu_at_0": (lambda m, x: (F.elu if m is torch else tensora.elu)(x, 2.0), [-1.0, 0.0, 2.0]),
    "clamp_at_bounds": (lambda m, x: x.clamp(-1.0, 1.0), [-2.0, -1.0, 0.0, 1.0, 2.0]),
    "clamp_inverted": (lambda m, x: x.clamp(1.0, -1.0), [-2.0, 0.0, 2.0]),
    "maximum_ties": (lambda m, x: m.maximum(x, x.flip(0) if m is torch else x[[2, 1, 0]]), [1.0, 2.0, 1.0]),
    "softplus_threshold": (lambda m, x: (F.softplus if m is torch else tensora.softplus)(x, 2.0, 5.0),
                           [2.4, 2.5, 2.6]),
    "sigmoid_tails": (lambda m, x: m.sigmoid(x), [-800.0, -40.0, 40.0, 800.0]),
    "floor_zero_grad": (lambda m, x: m.floor(x) + m.ceil(x) + m.round(x) + m.trunc(x) + m.sign(x),
                        [-1.5, -0.5, 0.5, 2.5]),
}


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_gradient_conventions_match_torch(name):
    fn, values = CONVENTIONS[name]
    x = tensora.tensor(values, dtype=tensora.float64, requires_grad=True)
    tx = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    out, tout = fn(tensora, x), fn(torch, tx)
    # Exact zeros, signs and infinities; 1 ulp of slack for values, since NumPy's exp and
    # torch's (Sleef) differ in the last bit at some points (sigmoid(-40)).
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=4e-16, atol=0)
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-15, atol=0)


VALUES = [-2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 2.7, float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("name", ["floor", "ceil", "trunc", "round", "frac", "sign", "abs", "relu", "sigmoid",
                                  "erf", "tanh", "exp", "expm1", "log1p", "isnan", "isinf", "isfinite"])
def test_special_values_match_torch(name):
    x, tx = _both(VALUES, "float64")
    ours, theirs = getattr(tensora, name)(x).numpy(), getattr(torch, name)(tx).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=3e-16)  # libm's last bit may differ
    finite = ~np.isnan(theirs)
    np.testing.assert_array_equal(np.signbit(ours[finite]), np.signbit(theirs[finite]))


def test_rounding_division_and_remainder_match_torch():
    a = [7.0, -7.0, 1.0, 5.5, -0.5, 0.3, -4.0]
    b = [2.0, 2.0, 0.1, -2.0, 3.0, 0.1, -0.7]
    (x, tx), (y, ty) = _both(a), _both(b)
    np.testing.assert_array_equal((x // y).numpy(), (tx // ty).numpy())
    np.testing.assert_array_equal((x % y).numpy(), (tx % ty).numpy())
    np.testing.assert_array_equal(tensora.fmod(x, y).numpy(), torch.fmod(tx, ty).numpy())
    for mode in ("trunc", "floor"):
        np.testing.assert_array_equal(tensora.div(x, y, rounding_mode=mode).numpy(),
                                      torch.div(tx, ty, rounding_mode=mode).numpy())
    (i, ti), (j, tj) = _both([7, -7, 3, -3]), _both([2, -3, -2, 5])
    for op in (lambda u, v: u // v, lambda u, v: u % v, lambda u, v: 7 // v, lambda u, v: -7 % v):
        np.testing.assert_array_equal(op(i, j).numpy(), op(ti, tj).numpy())
    r, tr = _both([1234.5678, 0.125, -2.5, 15.0, 25.0], "float32")
    for d in (0, 2, -1):
        np.testing.assert_array_equal(r.round(decimals=d).numpy(), tr.round(decimals=d).numpy())


def _dtype_name(t):
    return str(t.dtype).removeprefix("torch.")


@pytest.mark.parametrize("case", [
    lambda m, i, f, b: m.exp(i), lambda m, i, f, b: m.sqrt(b), lambda m, i, f, b: m.sigmoid(i),
    lambda m, i, f, b: m.abs(i), lambda m, i, f, b: m.sign(i), lambda m, i, f, b: m.relu(i),
    lambda m, i, f, b: m.floor(i), lambda m, i, f, b: m.clamp(i, min=1.5), lambda m, i, f, b: m.clamp(i, 0, 2),
    lambda m, i, f, b: m.square(b), lambda m, i, f, b: m.maximum(i, f), lambda m, i, f, b: i // 2.5,
    lambda m, i, f, b: i % 2, lambda m, i, f, b: 7 // i, lambda m, i, f, b: i & True, lambda m, i, f, b: ~b,
    lambda m, i, f, b: b ^ b, lambda m, i, f, b: m.logical_and(f, i), lambda m, i, f, b: m.isnan(i),
    lambda m, i, f, b: m.reciprocal(i), lambda m, i, f, b: m.erf(f), lambda m, i, f, b: m.minimum(f, b),
    lambda m, i, f, b: 2.5 - i, lambda m, i, f, b: f ** 2, lambda m, i, f, b: i ** 2,
])
@pytest.mark.parametrize("fdtype", ["float16", "bfloat16", "float64"])
def test_result_dtypes_and_values_match_torch(case, fdtype):
    (i, ti), (f, tf), (b, tb) = _both([1, 2, 3]), _both([0.5, 2.0, 1.25], fdtype), _both([True, False, True])
    out, tout = case(tensora, i, f, b), case(torch, ti, tf, tb)
    assert out.dtype.name == _dtype_name(tout)
    np.testing.assert_allclose(out.float().numpy() if out.dtype.is_floating_point else out.numpy(),
                               tout.float().numpy() if tout.dtype.is_floating_point else tout.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["exp", "sigmoid", "tanh", "gelu", "silu", "erf", "mish", "softplus", "rsqrt"])
def test_low_precision_values_match_torch(name, dtype):
    # Both compute in float32 and round once, so results agree to the last bit almost everywhere.
    values = np.linspace(0.05, 4, 200)
    t = torch.tensor(values, dtype=getattr(torch, dtype))
    x = tensora.tensor(t.float().numpy()).to(getattr(tensora, dtype))
    ours = (getattr(tensora, name)(x)).float().numpy()
    theirs = (getattr(torch, name) if hasattr(torch, name) else getattr(F, name))(t).float().numpy()
    ulp = 2.0 ** (-10 if dtype == "float16" else -7)
    np.testing.assert_allclose(ours, theirs, rtol=ulp, atol=1e-6)
    assert np.mean(ours == theirs) > 0.95


# -- 16-bit floats with a scalar operand --------------------------------------------------------------
# torch's CPU mul and div read a scalar second operand (a Python number, or a 0-d tensor of another
# dtype) in float32 and round the result once: bf16 x * 1.001 is not bf16 x * bf16(1.001). Its add and
# sub round the scalar to the tensor's dtype first, and other / x is x.reciprocal() * other.

SCALARS = [1.001, 0.1, -3.7, 1 / 3, 2.5e-3, 1e-8, 1234567.891, 65504.5, 7, 257, -3]
ARITH = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "div": lambda a, b: a / b}


def _half_values(dtype, n=4096):
    rng = np.random.default_rng(17)
    x = rng.standard_normal(n) * rng.choice([1e-4, 1e-2, 1.0, 30.0, 3000.0], n)
    t = torch.from_numpy(x).to(getattr(torch, dtype))
    return tensora.tensor(t.float().numpy()).to(getattr(tensora, dtype)), t


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("op", list(ARITH))
@pytest.mark.parametrize("scalar_kind", ["python", "0-d float32", "0-d float64", "0-d int64"])
def test_half_with_a_scalar_matches_torch_bit_for_bit(dtype, op, scalar_kind):
    x, tx = _half_values(dtype)
    fn = ARITH[op]
    for s in SCALARS:
        if scalar_kind == "python":
            ours, theirs = s, s
        else:
            kind = scalar_kind.split()[1]
            if kind == "int64" and not isinstance(s, int):
                continue
            ours, theirs = tensora.tensor(s, dtype=getattr(tensora, kind)), torch.tensor(s, dtype=getattr(torch, kind))
        for got, want in ((fn(x, ours), fn(tx, theirs)), (fn(ours, x), fn(theirs, tx))):
            assert got.dtype.name == _dtype_name(want), (s, got.dtype)
            np.testing.assert_array_equal(got.float().numpy(), want.float().numpy(), err_msg=f"{op} {s!r}")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_half_scalar_gradients_and_in_place_match_torch_bit_for_bit(dtype):
    x, tx = _half_values(dtype)
    g, tg = _half_values(dtype, 4096)
    cases = [lambda v: v * 1.001, lambda v: 0.3 * v, lambda v: v / 0.3, lambda v: 1.7 / v,
             lambda v: v * (torch.tensor(1.001) if isinstance(v, torch.Tensor) else tensora.tensor(1.001))]
    for fn in cases:
        ours, theirs = x.detach().clone().requires_grad_(), tx.detach().clone().requires_grad_()
        fn(ours).backward(g)
        fn(theirs).backward(tg)
        np.testing.assert_array_equal(ours.grad.float().numpy(), theirs.grad.float().numpy())
    ours, theirs = x.clone(), tx.clone()
    for step in (lambda v: v.mul_(1.001), lambda v: v.div_(0.7), lambda v: v.__imul__(-2.3)):
        step(ours)
        step(theirs)
    np.testing.assert_array_equal(ours.float().numpy(), theirs.float().numpy())
