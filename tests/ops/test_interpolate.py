"""interpolate (tensora/ops/interpolate.py) against per-pixel NumPy float64 formulas, gradients by gradcheck."""

import itertools

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora import DTypeError, ShapeError
from tensora.autograd import gradgradcheck


# -- references: one output pixel at a time -----------------------------------------------

def nearest_src(j, in_size, out_size, scale=None, exact=False):
    s = 1.0 / scale if scale else in_size / out_size
    return min(int(np.floor((j + 0.5) * s if exact else j * s)), in_size - 1)


def linear_src(j, in_size, out_size, align_corners, scale=None):
    """(i0, i1, lambda1) with PyTorch's source-index rule (UpSample.h, area_pixel_compute_source_index)."""
    if in_size == out_size:
        return j, j, 0.0
    if align_corners:
        src = j * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        s = 1.0 / scale if scale else in_size / out_size
        src = max(s * (j + 0.5) - 0.5, 0.0)
    i0 = min(int(np.floor(src)), in_size - 1)
    return i0, i0 + (i0 < in_size - 1), min(max(src - i0, 0.0), 1.0)


def nearest_ref(x, out, scales=(None, None), exact=False):
    y = np.zeros(x.shape[:2] + tuple(out))
    for pos in itertools.product(*[range(o) for o in out]):
        src = tuple(nearest_src(j, i, o, s, exact) for j, i, o, s in zip(pos, x.shape[2:], out, scales))
        y[(Ellipsis,) + pos] = x[(Ellipsis,) + src]
    return y


def linear_ref(x, out, align_corners, scales=None):
    """Separable linear interpolation: the weighted sum over the 2^nd corners around each source point."""
    nd = x.ndim - 2
    scales = scales or (None,) * nd
    y = np.zeros(x.shape[:2] + tuple(out))
    for pos in itertools.product(*[range(o) for o in out]):
        taps = [linear_src(j, i, o, align_corners, s) for j, i, o, s in zip(pos, x.shape[2:], out, scales)]
        for corner in itertools.product((0, 1), repeat=nd):
            weight = np.prod([t[2] if c else 1 - t[2] for t, c in zip(taps, corner)])
            y[(Ellipsis,) + pos] += weight * x[(Ellipsis,) + tuple(t[c] for t, c in zip(taps, corner))]
    return y


# -- nearest ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(8, 4), (10, 7), (3, 14), (5, 7)])
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_nearest_by_size(size, mode):
    check_op(lambda x: tensora.interpolate(x, size=size, mode=mode),
             lambda x: nearest_ref(x, size, exact=mode == "nearest-exact"), [(2, 2, 5, 7)])


def test_nearest_by_scale_factor_uses_the_scale():
    # 5 * 1.7 -> 8 rows; the source index uses 1/1.7, not 5/8 (recompute_scale_factor=None).
    check_op(lambda x: tensora.interpolate(x, scale_factor=(1.7, 0.6)),
             lambda x: nearest_ref(x, (8, 4), (1.7, 0.6)), [(1, 2, 5, 7)])
    check_op(lambda x: tensora.interpolate(x, scale_factor=(1.7, 0.6), recompute_scale_factor=True),
             lambda x: nearest_ref(x, (8, 4)), [(1, 2, 5, 7)])


def test_nearest_1d_3d_and_double_backward():
    check_op(lambda x: tensora.interpolate(x, scale_factor=3), lambda x: np.repeat(x, 3, axis=-1), [(2, 3, 4)])
    check_op(lambda x: tensora.interpolate(x, size=(2, 6, 3)), lambda x: nearest_ref(x, (2, 6, 3), (None,) * 3),
             [(1, 2, 3, 4, 5)])
    x = tensora.tensor(np.random.default_rng(0).standard_normal((1, 2, 3, 4)), requires_grad=True)
    assert gradgradcheck(lambda x: tensora.interpolate(x, size=(5, 3)), [x])


# -- linear family ----------------------------------------------------------------------------

@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(8, 4), (3, 11), (1, 7), (5, 7)])
def test_bilinear_by_size(size, align_corners):
    check_op(lambda x: tensora.interpolate(x, size=size, mode="bilinear", align_corners=align_corners),
             lambda x: linear_ref(x, size, align_corners), [(2, 2, 5, 7)], atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_by_scale_factor(align_corners):
    check_op(lambda x: tensora.interpolate(x, scale_factor=(2.5, 0.5), mode="bilinear", align_corners=align_corners),
             lambda x: linear_ref(x, (7, 2), align_corners, None if align_corners else (2.5, 0.5)), [(1, 2, 3, 5)],
             atol=1e-12)


def test_linear_trilinear_and_double_backward():
    check_op(lambda x: tensora.interpolate(x, scale_factor=2.3, mode="linear"),
             lambda x: linear_ref(x, (20,), False, (2.3,)), [(2, 3, 9)], atol=1e-12)
    check_op(lambda x: tensora.interpolate(x, size=(3, 2, 6), mode="trilinear", align_corners=True),
             lambda x: linear_ref(x, (3, 2, 6), True), [(1, 2, 2, 4, 3)], atol=1e-12)
    x = tensora.tensor(np.random.default_rng(1).standard_normal((1, 2, 3, 4)), requires_grad=True)
    assert gradgradcheck(lambda x: tensora.interpolate(x, size=(5, 3), mode="bilinear"), [x])


def area_ref(x, out):
    """PyTorch's area mode: output pixel j averages input [floor(j * in / out), ceil((j + 1) * in / out))."""
    y = np.zeros(x.shape[:2] + tuple(out))
    for pos in itertools.product(*[range(o) for o in out]):
        window = tuple(slice(j * i // o, -(-(j + 1) * i // o)) for j, i, o in zip(pos, x.shape[2:], out))
        y[(Ellipsis,) + pos] = x[(Ellipsis,) + window].mean(axis=tuple(range(2, x.ndim)))
    return y


def test_area_is_adaptive_average_pooling():
    # Uneven, overlapping windows (7 -> 3, 9 -> 4) against per-pixel window means: interpolate's area
    # mode and adaptive_avg_pool2d share their table code, so comparing them alone could not catch a bug.
    check_op(lambda x: tensora.interpolate(x, size=(3, 4), mode="area"), lambda x: area_ref(x, (3, 4)),
             [(2, 3, 7, 9)], atol=1e-12)
    x = tensora.tensor(np.random.default_rng(2).standard_normal((2, 3, 7, 9)))
    np.testing.assert_allclose(tensora.interpolate(x, size=(3, 4), mode="area").numpy(),
                               tensora.adaptive_avg_pool2d(x, (3, 4)).numpy())


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("float16", 2e-3), ("bfloat16", 1e-2)])
def test_interpolate_keeps_floating_dtype(dtype, tol):
    x = np.random.default_rng(3).standard_normal((1, 2, 4, 5))
    t = tensora.tensor(x).to(dtype).requires_grad_()
    out = tensora.interpolate(t, size=(7, 3), mode="bilinear")
    assert out.dtype.name == dtype
    np.testing.assert_allclose(out.double().detach().numpy(),
                               linear_ref(t.double().detach().numpy(), (7, 3), False), rtol=tol, atol=tol)
    out.sum().backward()
    assert t.grad.dtype.name == dtype


def test_interpolate_non_contiguous_and_empty_batch():
    check_op(lambda x: tensora.interpolate(x.transpose(-1, -2), size=(4, 6), mode="bilinear"),
             lambda x: linear_ref(x.swapaxes(-1, -2), (4, 6), False), [(1, 2, 5, 3)], atol=1e-12)
    e = tensora.zeros(0, 2, 3, 3, requires_grad=True)
    y = tensora.interpolate(e, scale_factor=2, mode="bilinear")
    assert y.shape == (0, 2, 6, 6)
    y.sum().backward()
    assert e.grad.shape == (0, 2, 3, 3)


def test_interpolate_errors():
    x = tensora.ones(1, 2, 4, 4)
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        tensora.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="either size or scale_factor"):
        tensora.interpolate(x)
    with pytest.raises(ValueError, match="mode 'bicubic' is not supported"):
        tensora.interpolate(x, size=3, mode="bicubic")
    with pytest.raises(ShapeError, match="Got 4D input, but linear mode needs 3D input"):
        tensora.interpolate(x, size=3, mode="linear")
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        tensora.interpolate(x, size=3, align_corners=True)
    with pytest.raises(ShapeError, match=r"output \[0, 0\]"):
        tensora.interpolate(x, scale_factor=0.1)
    with pytest.raises(ValueError, match="same number of spatial dimensions"):
        tensora.interpolate(x, size=(2, 3, 4))
    with pytest.raises(DTypeError, match="int64"):
        tensora.interpolate(x.long(), size=3)
    with pytest.raises(ShapeError, match=r"\[4, 4\]"):
        tensora.interpolate(tensora.ones(4, 4), size=3)
    with pytest.raises(ValueError, match="antialias"):
        tensora.interpolate(x, size=3, mode="bilinear", antialias=True)


def test_same_size_is_a_copy():
    x = tensora.ones(1, 1, 3, 3, requires_grad=True)
    y = tensora.interpolate(x, size=(3, 3), mode="bilinear")
    assert y is not x and y.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((1, 1, 3, 3)))


def test_long_dims_and_non_finite_inputs_take_the_gather_path():
    # Past 16 inputs per tap the linear map runs as gathers instead of a dense matmul.
    check_op(lambda x: tensora.interpolate(x, size=(3, 5), mode="bilinear"),
             lambda x: linear_ref(x, (3, 5), False), [(1, 1, 40, 36)], atol=1e-12, grad=False)
    check_op(lambda x: tensora.interpolate(x, size=(3, 2), mode="area"),
             lambda x: x.reshape(1, 1, 3, 40, 2, 35).mean(axis=(3, 5)), [(1, 1, 120, 70)], atol=1e-12, grad=False)
    # An inf stays local (as in PyTorch, a zero weight times inf still gives NaN next to it): with a
    # dense matrix 0 * inf would turn whole rows into NaN.
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    x[0, 0, 1, 2] = np.inf
    with np.errstate(invalid="ignore"):
        out = tensora.interpolate(tensora.tensor(x), size=(6, 7), mode="bilinear").numpy()
        np.testing.assert_allclose(out, linear_ref(x, (6, 7), False), atol=1e-12)
    assert np.isfinite(out[0, 0, 4:]).all() and np.isfinite(out[0, 0, :, [0, 1, 5, 6]]).all()
