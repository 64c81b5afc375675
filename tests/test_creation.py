"""Creation functions (tensora/creation.py) against NumPy and PyTorch's documented dtype rules."""

import os

import numpy as np
import pytest

import tensora
from tensora import ShapeError


def test_tensor_infers_dtype_like_torch():
    assert tensora.tensor([1, 2]).dtype is tensora.int64
    assert tensora.tensor([1, 2.0]).dtype is tensora.float32
    assert tensora.tensor([True, False]).dtype is tensora.bool
    assert tensora.tensor([True, 2]).dtype is tensora.int64
    assert tensora.tensor(np.zeros(2, np.float64)).dtype is tensora.float64
    assert tensora.tensor(3.0).shape == ()
    assert tensora.tensor([]).shape == (0,) and tensora.tensor([]).dtype is tensora.float32


def test_tensor_copies_and_as_tensor_shares():
    a = np.arange(4.0)
    t = tensora.tensor(a)
    s = tensora.as_tensor(a)
    a[0] = 9
    assert t[0].item() == 0 and s[0].item() == 9
    assert tensora.as_tensor(a, dtype=tensora.float32).dtype is tensora.float32


def test_tensor_from_list_of_tensors():
    t = tensora.tensor([tensora.tensor([1.0, 2.0]), tensora.tensor([3.0, 4.0])])
    assert t.shape == (2, 2) and t.dtype is tensora.float32
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_ragged_data_is_a_clear_error():
    with pytest.raises(ShapeError, match="could not build a tensor"):
        tensora.tensor([[1, 2], [3]])


def test_from_numpy_is_zero_copy_both_ways():
    a = np.zeros((2, 3), np.float32)
    t = tensora.from_numpy(a)
    t[0, 1] = 5
    assert a[0, 1] == 5
    a[1, 2] = 7
    assert t[1, 2].item() == 7
    assert t.numpy() is a
    with pytest.raises(ShapeError, match="negative"):
        tensora.from_numpy(a[:, ::-1])
    with pytest.raises(tensora.DTypeError, match="complex"):
        tensora.from_numpy(np.zeros(2, np.complex64))


@pytest.mark.parametrize("fn, value", [(tensora.zeros, 0), (tensora.ones, 1)])
def test_filled(fn, value):
    for args in [(2, 3), ((2, 3),), ([2, 3],)]:
        t = fn(*args)
        assert t.shape == (2, 3) and t.dtype is tensora.float32 and (t.numpy() == value).all()
    assert fn(2, dtype=tensora.int8).dtype is tensora.int8
    assert fn(0, 4).shape == (0, 4)
    with pytest.raises(ShapeError, match="negative dimension"):
        fn(-1)


def test_full_infers_dtype_from_value():
    assert tensora.full((2,), 1).dtype is tensora.int64
    assert tensora.full((2,), 1.5).dtype is tensora.float32
    assert tensora.full((2,), True).dtype is tensora.bool
    np.testing.assert_array_equal(tensora.full((2, 2), 7.0).numpy(), np.full((2, 2), 7.0))


def test_like_functions_keep_shape_dtype_device():
    x = tensora.ones(2, 3, dtype=tensora.float64)
    for fn in (tensora.zeros_like, tensora.ones_like, tensora.empty_like, tensora.rand_like, tensora.randn_like):
        y = fn(x)
        assert y.shape == x.shape and y.dtype is tensora.float64
    assert tensora.full_like(x, 3).numpy().tolist() == [[3.0] * 3] * 2
    assert tensora.zeros_like(x, dtype=tensora.int32).dtype is tensora.int32


def test_arange_linspace_eye():
    np.testing.assert_array_equal(tensora.arange(5).numpy(), np.arange(5))
    assert tensora.arange(5).dtype is tensora.int64
    assert tensora.arange(0, 1, 0.25).dtype is tensora.float32
    np.testing.assert_allclose(tensora.arange(0, 1, 0.25).numpy(), [0, 0.25, 0.5, 0.75])
    assert tensora.arange(10, 0, -3).tolist() == [10, 7, 4, 1]
    assert tensora.arange(1, 2.5, 0.5).shape == (3,)  # end is exclusive, as in torch
    with pytest.raises(ValueError, match="step must be nonzero"):
        tensora.arange(0, 3, 0)
    np.testing.assert_allclose(tensora.linspace(0, 1, 5).numpy(), np.linspace(0, 1, 5))
    assert tensora.linspace(0, 1, 1).tolist() == [0.0]
    np.testing.assert_array_equal(tensora.eye(3).numpy(), np.eye(3))
    assert tensora.eye(2, 3).shape == (2, 3)


def test_seeded_streams_repeat():
    tensora.manual_seed(42)
    a = [tensora.rand(3), tensora.randn(2, 2), tensora.randint(0, 10, (5,)), tensora.randperm(6)]
    tensora.manual_seed(42)
    b = [tensora.rand(3), tensora.randn(2, 2), tensora.randint(0, 10, (5,)), tensora.randperm(6)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_generator_objects_are_independent_streams():
    g1 = tensora.Generator().manual_seed(7)
    g2 = tensora.Generator().manual_seed(7)
    tensora.randn(100)  # draws from the default generator do not move g1/g2
    np.testing.assert_array_equal(tensora.randn(4, generator=g1).numpy(), tensora.randn(4, generator=g2).numpy())
    assert g1.initial_seed() == 7


def test_generator_state_round_trip_is_json():
    import json
    g = tensora.Generator().manual_seed(3)
    tensora.rand(5, generator=g)
    state = json.loads(json.dumps(g.get_state()))
    x = tensora.rand(5, generator=g)
    g.set_state(state)
    np.testing.assert_array_equal(tensora.rand(5, generator=g).numpy(), x.numpy())
    tensora.manual_seed(1)
    s = tensora.get_rng_state()
    y = tensora.randn(3)
    tensora.set_rng_state(s)
    np.testing.assert_array_equal(tensora.randn(3).numpy(), y.numpy())


def test_random_value_ranges_and_dtypes():
    u = tensora.rand(10000)
    assert u.dtype is tensora.float32 and 0 <= u.numpy().min() and u.numpy().max() < 1
    n = tensora.randn(20000, dtype=tensora.float64)
    assert abs(n.numpy().mean()) < 0.05 and abs(n.numpy().std() - 1) < 0.05
    r = tensora.randint(3, (1000,))
    assert r.dtype is tensora.int64 and set(np.unique(r.numpy())) == {0, 1, 2}
    assert sorted(tensora.randperm(10).tolist()) == list(range(10))
    assert tensora.randn(3, dtype=tensora.bfloat16).dtype is tensora.bfloat16
    z = tensora.normal(2.0, 0.5, (20000,))
    assert abs(z.numpy().mean() - 2) < 0.05 and abs(z.numpy().std() - 0.5) < 0.05
    m = tensora.normal(tensora.zeros(3), tensora.ones(3))
    assert m.shape == (3,)
    with pytest.raises(tensora.DTypeError, match="floating"):
        tensora.rand(2, dtype=tensora.int32)


def test_requires_grad_on_creation():
    assert tensora.zeros(2, requires_grad=True).requires_grad
    with pytest.raises(tensora.DTypeError, match="only floating point"):
        tensora.zeros(2, dtype=tensora.int64, requires_grad=True)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident size is read from Linux's /proc")
def test_zeros_are_not_touched_until_written():
    # A KV cache is sized for the whole context but mostly never written: zeros() must come from
    # calloc'd pages, not a fill that makes every page resident (512 MiB here).
    before = _resident_bytes()
    t = tensora.zeros(1 << 27, dtype=tensora.float32)
    grown = _resident_bytes() - before
    assert grown < 64 << 20, f"zeros() made {grown >> 20} MiB resident"
    assert t.numpy()[:: 1 << 20].max() == 0 and t.numpy()[-1] == 0
    assert tensora.ones(3).numpy().tolist() == [1, 1, 1] and tensora.full((2,), 7.0).numpy().tolist() == [7, 7]


def test_arange_counts_exactly_with_large_ints_and_takes_0d_tensors():
    assert tensora.arange(0, 10**18, 10**18 // 7).shape == (8,)  # a float quotient made it 7
    assert tensora.arange(0, 10**18, 10**18 // 7)[-1].item() == 7 * (10**18 // 7)
    assert tensora.arange(tensora.tensor(3)).dtype == tensora.int64
    assert tensora.arange(tensora.tensor(3)).tolist() == [0, 1, 2]


@pytest.mark.parametrize("make", [lambda: tensora.zeros(2.5), lambda: tensora.ones((2, 1.0)),
                                  lambda: tensora.linspace(0, 1, 2.5)])
def test_a_float_size_is_refused_not_truncated(make):
    with pytest.raises(TypeError, match="must be an integer, got"):
        make()
    assert tensora.zeros(np.int64(2), tensora.tensor(3)).shape == (2, 3)  # integers of any kind do
