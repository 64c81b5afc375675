"""cat/stack/split/chunk/unbind/flip/roll/repeat/tile/pad/tril/triu/diagonal
(tensora/ops/combine.py) against NumPy float64; gradients by gradcheck."""

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora import ShapeError


def _t(a, **kw):
    return tensora.tensor(np.asarray(a), **kw)


# -- cat / stack ---------------------------------------------------------------------------

@pytest.mark.parametrize("dim,shapes", [(0, [(2, 3), (1, 3), (4, 3)]), (1, [(2, 1), (2, 3)]),
                                        (-1, [(2, 2, 1), (2, 2, 3)]), (0, [(0, 3), (2, 3)])])
def test_cat(dim, shapes):
    check_op(lambda *xs: tensora.cat(xs, dim), lambda *xs: np.concatenate(xs, dim), shapes, gradgrad=True)


def test_cat_non_contiguous_promotion_and_copy():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((2, 4))
    check_op(lambda x, y: tensora.cat([x.T, y[:, ::2]], 1), lambda x, y: np.concatenate([x.T, y[:, ::2]], 1), [a, b])
    x = tensora.ones(2, 2, dtype=tensora.int64)
    out = tensora.cat([x, tensora.full((1, 2), 0.5, dtype=tensora.float32)])
    assert out.dtype == tensora.float32 and out.tolist() == [[1, 1], [1, 1], [0.5, 0.5]]
    x[0, 0] = 7  # the result owns its memory
    assert out[0, 0].item() == 1
    half = tensora.cat([tensora.ones(2, dtype=tensora.bfloat16), tensora.zeros(1, dtype=tensora.bfloat16)])
    assert half.dtype == tensora.bfloat16 and half.tolist() == [1, 1, 0]


def test_cat_skips_legacy_empty_and_errors():
    out = tensora.cat([tensora.zeros(0), tensora.ones(2, 3)])
    assert out.shape == (2, 3)
    with pytest.raises(ShapeError, match=r"must match except in dimension 1: got shapes \[2, 3\] and \[3, 3\]"):
        tensora.cat([tensora.ones(2, 3), tensora.ones(3, 3)], dim=1)
    with pytest.raises(ShapeError, match="zero-dimensional"):
        tensora.cat([tensora.ones(()), tensora.ones(())])
    with pytest.raises(ValueError, match="non-empty"):
        tensora.cat([])
    with pytest.raises(TypeError, match="list or tuple"):
        tensora.cat(tensora.ones(2))
    with pytest.raises(IndexError, match="dimension out of range"):
        tensora.cat([tensora.ones(2)], dim=1)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_stack(dim):
    check_op(lambda *xs: tensora.stack(xs, dim), lambda *xs: np.stack(xs, dim), [(2, 3), (2, 3), (2, 3)],
             gradgrad=True)


def test_stack_errors_and_scalars():
    with pytest.raises(ShapeError, match=r"equal size, got shapes \[2, 3\] and \[3, 2\]"):
        tensora.stack([tensora.ones(2, 3), tensora.ones(3, 2)])
    # The same element count in another shape is still refused, and the message names the odd one out.
    with pytest.raises(ShapeError, match=r"got shapes \[2, 3\] and \[3, 2\] \(tensor 2\)"):
        tensora.stack([tensora.ones(2, 3), tensora.ones(2, 3), tensora.ones(3, 2)])
    with pytest.raises(ShapeError, match=r"got shapes \[2, 3\] and \[4, 3\] \(tensor 1\)"):
        tensora.stack([tensora.ones(2, 3), tensora.ones(4, 3)])
    assert tensora.stack([tensora.tensor(1.0), tensora.tensor(2.0)]).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_stack_of_strided_views_matches_numpy(dim):
    # Reference: np.stack of the same (non-contiguous) arrays; the result is a fresh C-ordered array.
    base = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    arrays = [base[0].T, base[1, :, ::2].repeat(2, 1).T, np.ascontiguousarray(base[1].T) + 100]  # (6, 4) each
    got = tensora.stack([tensora.from_numpy(a) for a in arrays], dim)  # zero-copy: strides kept
    np.testing.assert_array_equal(got.numpy(), np.stack(arrays, dim))
    assert got.is_contiguous()
    got[(0,) * got.ndim] = -1.0  # no storage shared with any input
    assert arrays[0][0, 0] == 0.0


# -- split / chunk / unbind ---------------------------------------------------------------------

@pytest.mark.parametrize("size,dim,expect", [(2, 0, [2, 2, 1]), ([1, 4], 0, [1, 4]), (3, -1, [3]), (1, 1, [1, 1, 1])])
def test_split_sizes_and_views(size, dim, expect):
    x = tensora.arange(15.0).reshape(5, 3)
    parts = x.split(size, dim)
    assert [p.shape[dim] for p in parts] == expect
    np.testing.assert_array_equal(np.concatenate([p.numpy() for p in parts], dim), x.numpy())
    x[0, 0] = -1.0  # pieces are views
    assert parts[0].numpy().flat[0] == -1.0


def test_split_gradients_with_unused_pieces():
    check_op(lambda x: tensora.split(x, [1, 2, 2], 0)[1] * 3, lambda x: x[1:3] * 3, [(5, 2)], gradgrad=True)
    check_op(lambda x: x.split(2, 1)[-1], lambda x: x[:, 4:], [(2, 5)])
    check_op(lambda x: x.split(2, 1), lambda x: [x[:, :2], x[:, 2:4], x[:, 4:]], [(2, 5)], gradgrad=True)


def test_split_errors():
    with pytest.raises(ShapeError, match=r"sizes \[2, 2\] must be non-negative and sum to 5"):
        tensora.ones(5).split([2, 2])
    with pytest.raises(ValueError, match="split_size must be positive"):
        tensora.ones(5).split(0)


@pytest.mark.parametrize("n,chunks,expect", [(5, 3, [2, 2, 1]), (6, 4, [2, 2, 2]), (2, 5, [1, 1]), (6, 2, [3, 3])])
def test_chunk_matches_torch_rule(n, chunks, expect):
    assert [p.shape[0] for p in tensora.arange(n).chunk(chunks)] == expect


def test_chunk_gradient_and_error():
    check_op(lambda x: x.chunk(2, dim=-1)[0], lambda x: x[:, :3], [(2, 5)])
    with pytest.raises(ValueError, match="chunks must be positive"):
        tensora.ones(3).chunk(0)


def test_unbind():
    x = tensora.arange(6.0).reshape(2, 3)
    rows = x.unbind()
    cols = tensora.unbind(x, -1)
    assert [r.tolist() for r in rows] == [[0, 1, 2], [3, 4, 5]] and cols[2].tolist() == [2, 5]
    check_op(lambda x: x.unbind(1)[1] * 2, lambda x: x[:, 1] * 2, [(2, 3)], gradgrad=True)
    check_op(lambda x: tensora.unbind(x, 0), lambda x: list(x), [(3, 2)])
    v = tensora.arange(3.0)
    items = v.unbind()  # 0-d views of a 1-D tensor
    v[2] = 9.0
    assert items[2].shape == () and items[2].item() == 9.0


# -- flip / roll / repeat / tile --------------------------------------------------------------------

@pytest.mark.parametrize("dims", [(0,), (1,), (0, 2), (-1,), ()])
def test_flip(dims):
    check_op(lambda x: x.flip(dims), lambda x: np.flip(x, dims) if dims else x, [(2, 3, 4)], gradgrad=True)


def test_flip_copies_and_dtypes():
    x = tensora.arange(4)
    y = tensora.flip(x, 0)
    x[0] = 9
    assert y.tolist() == [3, 2, 1, 0] and y.is_contiguous()
    assert tensora.flip(tensora.ones(2, 2, dtype=tensora.float16), [0, 1]).dtype == tensora.float16
    with pytest.raises(ValueError, match="more than once"):
        x.flip(0, -1)


@pytest.mark.parametrize("shifts,dims", [(2, None), (-1, 0), ((1, -2), (0, 1)), (7, -1), ((1,), (1,))])
def test_roll(shifts, dims):
    check_op(lambda x: x.roll(shifts, dims), lambda x: np.roll(x, shifts, dims), [(3, 4)], gradgrad=True)


def test_roll_errors():
    with pytest.raises(ValueError, match="same length"):
        tensora.ones(2, 2).roll((1, 2), 0)


@pytest.mark.parametrize("reps", [(2, 3), (1, 1), (2, 1, 2), (0, 2)])
def test_repeat(reps):
    check_op(lambda x: x.repeat(*reps), lambda x: np.tile(x, reps), [(2, 3)], gradgrad=True)


def test_repeat_tile_and_errors():
    check_op(lambda x: tensora.tile(x, (2,)), lambda x: np.tile(x, (1, 2)), [(2, 3)])
    check_op(lambda x: x.tile((2, 1, 1)), lambda x: np.tile(x, (2, 1, 1)), [(2, 3)])
    assert tensora.tensor(5).repeat(3).tolist() == [5, 5, 5]
    with pytest.raises(ShapeError, match=r"can not be smaller than the number of dims of shape \[2, 3\]"):
        tensora.ones(2, 3).repeat(2)


# -- pad ------------------------------------------------------------------------------------------------

_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _np_pad(x, pad, mode, value=0.0):
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":
        crop = tuple(slice(max(-b, 0), n - max(-a, 0)) for (b, a), n in zip(widths, x.shape))
        return np.pad(x[crop], [(max(b, 0), max(a, 0)) for b, a in widths], constant_values=value)
    return np.pad(x, widths, mode=_MODES[mode])


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,pad", [((2, 5), (2, 1)), ((2, 3, 4), (1, 2, 2, 0)), ((1, 2, 3, 3), (1, 1, 2, 2)),
                                       ((2, 3, 4), (0, 0, 1, 1, 1, 0))])
def test_pad_modes(mode, shape, pad):
    check_op(lambda x: tensora.pad(x, pad, mode=mode), lambda x: _np_pad(x, pad, mode), [shape], gradgrad=True)


def test_pad_constant_value_crop_and_ints():
    check_op(lambda x: tensora.pad(x, (-1, 2, 1, -2), value=2.5), lambda x: _np_pad(x, (-1, 2, 1, -2), "constant", 2.5),
             [(4, 5)], gradgrad=True)
    out = tensora.pad(tensora.ones(2, dtype=tensora.int32), (1, 0), value=7)
    assert out.dtype == tensora.int32 and out.tolist() == [7, 1, 1]
    assert tensora.pad(tensora.ones(2, 2, dtype=tensora.bfloat16), (1, 1)).dtype == tensora.bfloat16


def test_pad_non_contiguous():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 3))
    check_op(lambda x: tensora.pad(x.T, (2, 2), mode="reflect"),
             lambda x: np.pad(x.T, [(0, 0), (2, 2)], mode="reflect"), [a])


@pytest.mark.parametrize("args,err,msg", [
    (((2, 3), (1,)), ShapeError, "padding length 1 must be even"),
    (((2, 3), (1, 1, 1, 1, 1, 1)), ShapeError, "at most twice"),
    (((2, 3), (3, 0), "reflect"), ShapeError, r"reflect padding \(3, 0\) of dim 1"),
    (((2, 3), (4, 0), "circular"), ShapeError, "circular padding"),
    (((2, 3), (-2, -2), "replicate"), ShapeError, "crops more than a dim holds"),
    (((2, 3), (1, 1), "wrap"), ValueError, "mode must be"),
    (((2, 3), (-2, -2)), ShapeError, "negative size"),
])
def test_pad_errors(args, err, msg):
    shape, amounts, *mode = args
    with pytest.raises(err, match=msg):
        tensora.pad(tensora.ones(shape), amounts, *mode)


# -- tril / triu / diagonal -------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, 1, -1, 5])
def test_tril_triu(k):
    check_op(lambda x: x.tril(k), lambda x: np.tril(x, k), [(3, 4)], gradgrad=True)
    check_op(lambda x: tensora.triu(x, k), lambda x: np.triu(x, k), [(2, 3, 4)])
    m = tensora.ones(3, 3, dtype=tensora.int64)
    assert m.triu(k).tolist() == np.triu(np.ones((3, 3), int), k).tolist()


def test_tril_error():
    with pytest.raises(ShapeError, match=r"2 or more dims, got shape \[3\]"):
        tensora.ones(3).tril()


@pytest.mark.parametrize("offset,d1,d2", [(0, 0, 1), (1, 0, 1), (-1, 0, 1), (0, 1, 2), (2, -1, 0), (5, 0, 1)])
def test_diagonal(offset, d1, d2):
    check_op(lambda x: x.diagonal(offset, d1, d2), lambda x: np.diagonal(x, offset, d1, d2).copy(), [(3, 4, 5)],
             gradgrad=True)


def test_diagonal_is_a_view():
    x = tensora.arange(9.0).reshape(3, 3)
    d = tensora.diagonal(x)
    assert d.tolist() == [0, 4, 8] and d.storage_offset() == 0
    x[1, 1] = -1
    assert d[1].item() == -1
    with pytest.raises(ValueError, match="cannot be the same"):
        x.diagonal(0, 1, -1)
