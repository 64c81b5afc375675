"""default_collate / default_convert against np.stack of the same samples (torch's rules; parity in
test_loader_torch.py)."""

import collections

import numpy as np
import pytest

import tensora
from tensora.data import collate, default_collate, default_collate_fn_map, default_convert

Point = collections.namedtuple("Point", ["x", "y"])


def arr(t):
    assert isinstance(t, tensora.Tensor)
    return t.numpy()


def test_tensors_stack_along_new_dim(rng):
    samples = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(4)]
    out = default_collate([tensora.from_numpy(s) for s in samples])
    assert out.dtype == tensora.float32
    np.testing.assert_array_equal(arr(out), np.stack(samples))


def test_numpy_arrays_and_scalars_become_tensors(rng):
    samples = [rng.integers(0, 9, (3,)).astype(np.int16) for _ in range(3)]
    out = default_collate(samples)
    assert out.dtype == tensora.int16
    np.testing.assert_array_equal(arr(out), np.stack(samples))
    scalars = default_collate([np.float32(1.5), np.float32(2.5)])
    assert scalars.dtype == tensora.float32
    np.testing.assert_array_equal(arr(scalars), [1.5, 2.5])


def test_python_numbers_bools_and_strings():
    ints = default_collate([1, 2, 3])
    assert ints.dtype == tensora.int64 and ints.tolist() == [1, 2, 3]
    floats = default_collate([1.0, 2.5])
    assert floats.dtype == tensora.float64 and floats.tolist() == [1.0, 2.5]
    bools = default_collate([True, False])
    assert bools.dtype == tensora.bool and bools.tolist() == [True, False]
    assert default_collate(["a", "b"]) == ["a", "b"]
    assert default_collate([b"a", b"b"]) == [b"a", b"b"]


def test_nested_structures(rng):
    xs = [rng.standard_normal(3) for _ in range(2)]
    batch = [{"img": tensora.from_numpy(xs[i]), "meta": (i, [float(i), "s"]), "p": Point(i, np.int32(i))}
             for i in range(2)]
    out = default_collate(batch)
    assert set(out) == {"img", "meta", "p"}
    np.testing.assert_array_equal(arr(out["img"]), np.stack(xs))
    # a tuple becomes a list, a list stays a list, a namedtuple keeps its type (torch's rules)
    assert isinstance(out["meta"], list) and isinstance(out["meta"][1], list)
    assert out["meta"][0].tolist() == [0, 1]
    assert out["meta"][1][0].tolist() == [0.0, 1.0] and out["meta"][1][0].dtype == tensora.float64
    assert out["meta"][1][1] == ("s", "s")  # strings come back as the tuple torch hands its collate
    assert isinstance(out["p"], Point)
    assert out["p"].x.tolist() == [0, 1] and out["p"].y.dtype == tensora.int32


def test_mapping_type_is_kept():
    batch = [collections.OrderedDict(b=1, a=2), collections.OrderedDict(b=3, a=4)]
    out = default_collate(batch)
    assert isinstance(out, collections.OrderedDict)
    assert list(out) == ["b", "a"]
    assert out["a"].tolist() == [2, 4]


def test_errors():
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [1]])
    with pytest.raises(TypeError, match="default_collate"):
        default_collate([object(), object()])
    with pytest.raises(TypeError, match="default_collate"):
        default_collate([np.array(["a"]), np.array(["b"])])
    with pytest.raises(ValueError, match="equal size"):
        default_collate([tensora.zeros(2), tensora.zeros(3)])


def test_collate_with_an_extended_table():
    class Box:
        def __init__(self, v):
            self.v = v

    table = {**default_collate_fn_map, Box: lambda batch, *, collate_fn_map: sum(b.v for b in batch)}
    out = collate([(Box(1), 2), (Box(3), 4)], collate_fn_map=table)
    assert out[0] == 4 and out[1].tolist() == [2, 4]


def test_default_convert(rng):
    a = rng.standard_normal(3)
    out = default_convert({"a": a, "t": (np.int64(3), "s"), "p": Point(a, 1)})
    assert isinstance(out["a"], tensora.Tensor) and out["a"].dtype == tensora.float64
    np.testing.assert_array_equal(arr(out["a"]), a)
    assert isinstance(out["t"], list) and out["t"][0].item() == 3 and out["t"][1] == "s"
    assert isinstance(out["p"], Point) and out["p"].y == 1
    strings = np.array(["x", "y"])
    assert default_convert(strings) is strings  # arrays of strings stay NumPy
    assert default_convert("text") == "text"
