"""Tensor metadata and zero-copy views (tensora/tensor.py, tensora/ops/shape.py, index.py).

Reference: NumPy for values and PyTorch's documented view semantics (writes
through a view are seen by the base; strides in elements; storage offsets).
"""

import numpy as np
import pytest

import tensora
from tensora import ShapeError


def base():
    return tensora.arange(24, dtype=tensora.float32).reshape(2, 3, 4)


VIEWS = {
    "view": lambda x: x.view(6, 4),
    "view_infer": lambda x: x.view(-1),
    "reshape": lambda x: x.reshape(4, 6),
    "transpose": lambda x: x.transpose(0, 2),
    "permute": lambda x: x.permute(2, 0, 1),
    "expand": lambda x: x[:, :1, :].expand(2, 5, 4),
    "narrow": lambda x: x.narrow(2, 1, 2),
    "slice": lambda x: x[1, ::2, 1:3],
    "none_ellipsis": lambda x: x[None, ..., 0],
    "unsqueeze": lambda x: x.unsqueeze(1),
    "squeeze": lambda x: x[:, :1].squeeze(1),
    "flatten": lambda x: x.flatten(1),
    "unflatten": lambda x: x.unflatten(2, (2, 2)),
    "T": lambda x: x.T,
    "mT": lambda x: x.mT,
    "int_index": lambda x: x[1],
    "movedim": lambda x: x.movedim(0, -1),
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_views_share_storage_and_see_writes(name):
    x = base()
    v = VIEWS[name](x)
    assert np.shares_memory(v.numpy(), x.numpy())
    assert v._base is (x._base if x._base is not None else x)
    assert v._version == x._version
    # O(1): same buffer, only metadata differs.
    assert x.data_ptr() <= v.data_ptr() < x.data_ptr() + x.nbytes
    if name == "expand":
        return  # expanded views are read-only, as broadcast results
    v.fill_(-1.0)
    assert (x.numpy() == -1.0).sum() == v.numpy().size
    assert x._version == 1 and v._version == 1


def test_write_into_base_seen_by_view():
    x = base()
    v = x.transpose(0, 1)[1]
    x[0, 1, 2] = 100.0
    assert v[0, 2].item() == 100.0


def test_setitem_through_view_of_view():
    x = base()
    x.view(6, 4)[2:4].narrow(1, 0, 1)[:] = 7.0
    np.testing.assert_array_equal(x.numpy().reshape(6, 4)[2:4, 0], [7.0, 7.0])


def test_strides_offsets_and_contiguity_match_torch_semantics():
    x = base()
    assert x.stride() == (12, 4, 1) and x.is_contiguous()
    t = x.transpose(0, 2)
    assert t.stride() == (1, 4, 12) and not t.is_contiguous()
    assert t.stride(-1) == 12
    s = x[1, 1:, 2:]
    assert s.storage_offset() == 12 + 4 + 2
    assert s.stride() == (4, 1)
    assert x.expand(3, 2, 3, 4).stride() == (0, 12, 4, 1)
    assert x.storage_offset() == 0


def test_contiguous_copies_only_when_needed():
    x = base()
    assert x.contiguous() is x
    t = x.transpose(0, 1)
    c = t.contiguous()
    assert c.is_contiguous() and not np.shares_memory(c.numpy(), x.numpy())
    np.testing.assert_array_equal(c.numpy(), t.numpy())


def test_view_refuses_to_copy_but_reshape_copies():
    t = base().transpose(0, 1)
    with pytest.raises(ShapeError, match=r"view size \[6, 4\] is not compatible.*reshape"):
        t.view(6, 4)
    r = t.reshape(6, 4)
    assert not np.shares_memory(r.numpy(), t.numpy())
    np.testing.assert_array_equal(r.numpy(), t.numpy().reshape(6, 4))


def test_reshape_errors_name_shapes():
    with pytest.raises(ShapeError, match=r"shape \[5, 5\] is invalid for input of size 24"):
        base().reshape(5, 5)
    with pytest.raises(ShapeError, match="only one dimension can be inferred"):
        base().reshape(-1, -1)


def test_expand_errors_name_sizes():
    with pytest.raises(ShapeError, match=r"expanded size 5 must match the existing size 3"):
        base().expand(2, 5, 4)


def test_permute_and_dim_errors():
    with pytest.raises(ShapeError, match=r"permute dims \[0, 1\]"):
        base().permute(0, 1)
    with pytest.raises(IndexError, match=r"range of \[-3, 2\], but got 3"):
        base().transpose(0, 3)


def test_negative_step_slicing_is_refused():
    with pytest.raises(ValueError, match="step must be greater than zero"):
        base()[::-1]


def test_advanced_indexing_copies():
    x = base()
    y = x[tensora.tensor([1, 0])]
    assert not np.shares_memory(y.numpy(), x.numpy())
    m = x > 10
    np.testing.assert_array_equal(x[m].numpy(), x.numpy()[x.numpy() > 10])


def test_squeeze_keeps_non_singleton_dims_like_torch():
    x = tensora.zeros(2, 1, 3)
    assert x.squeeze(0).shape == (2, 1, 3)
    assert x.squeeze().shape == (2, 3)
    assert x.squeeze((0, 1)).shape == (2, 3)


def test_metadata():
    x = base()
    assert x.shape == (2, 3, 4) and repr(x.shape) == "tensora.Size([2, 3, 4])"
    assert x.size(1) == 3 and x.size(-1) == 4 and x.dim() == 3 and x.ndim == 3
    assert x.numel() == 24 and x.element_size() == 4 and x.nbytes == 96
    assert len(x) == 2 and [t.shape for t in x] == [(3, 4), (3, 4)]


def test_item_tolist_and_python_conversions():
    assert tensora.tensor(2.5).item() == 2.5
    assert tensora.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert tensora.tensor([1.5], dtype=tensora.bfloat16).tolist() == [1.5]
    assert int(tensora.tensor(3)) == 3 and float(tensora.tensor(0.5)) == 0.5
    assert bool(tensora.tensor([True]))
    with pytest.raises(ValueError, match="4 elements cannot be converted"):
        tensora.zeros(4).item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(tensora.zeros(2))
    assert [10, 20, 30][tensora.tensor(1)] == 20


def test_repr_like_torch():
    assert repr(tensora.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(tensora.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(tensora.tensor([1.0], dtype=tensora.float64)) == "tensor([1.], dtype=tensora.float64)"
    assert repr(tensora.ones(2, requires_grad=True)) == "tensor([1., 1.], requires_grad=True)"
    assert "grad_fn=<MulBackward>" in repr(tensora.ones(2, requires_grad=True) * 2)
    assert repr(tensora.zeros(0, 3)) == "tensor([], size=(0, 3))"
    assert repr(tensora.tensor([[1, 2], [3, 4]])) == "tensor([[1, 2],\n        [3, 4]])"


def test_tensors_are_not_pickled():
    import pickle
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(tensora.zeros(2))


# -- copy.deepcopy (torch's Tensor.__deepcopy__: a leaf, requires_grad kept, .grad copied, memo respected) ----

def test_deepcopy_is_a_leaf_with_its_own_values_requires_grad_and_grad():
    import copy
    x = tensora.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    y = copy.deepcopy(x)
    assert type(y) is tensora.Tensor and y.is_leaf and y.requires_grad and y.data_ptr() != x.data_ptr()
    np.testing.assert_array_equal(y.detach().numpy(), x.detach().numpy())
    assert y.grad is not x.grad and y.grad.data_ptr() != x.grad.data_ptr()
    np.testing.assert_array_equal(y.grad.numpy(), [2.0, -4.0, 6.0])
    with tensora.no_grad():
        y.add_(1.0)
        y.grad.zero_()
    assert x.tolist() == [1.0, -2.0, 3.0] and x.grad.tolist() == [2.0, -4.0, 6.0]
    (y * 2).sum().backward()  # the copy is a leaf of its own graph
    assert y.grad.tolist() == [2.0, 2.0, 2.0] and x.grad.tolist() == [2.0, -4.0, 6.0]
    z = copy.deepcopy(tensora.tensor([1, 2], dtype=tensora.int8))
    assert z.dtype is tensora.int8 and not z.requires_grad and z.tolist() == [1, 2]


def test_deepcopy_respects_memo_and_refuses_non_leaves():
    import copy
    x = tensora.ones(2, requires_grad=True)
    x.grad = tensora.zeros(2)
    a, b, g = copy.deepcopy([x, x, x.grad])
    assert a is b and g is a.grad  # one copy per original, wherever it appears
    memo = {}
    assert copy.deepcopy(x, memo) is copy.deepcopy(x, memo)
    with pytest.raises(RuntimeError, match="graph leaves"):  # as torch: results with history are refused
        copy.deepcopy(x * 2)
    assert copy.deepcopy((x * 2).detach()).is_leaf


def test_deepcopy_keeps_views_of_one_storage_together():
    # torch copies a view's whole storage once per deepcopy, so copies of a base and its views alias
    # like the originals; writes through one copy are seen by the others and by no original.
    import copy
    b = tensora.arange(12.0).reshape(3, 4)
    v, t, e = b[1:, ::2], b.T, b[0].expand(2, 4)
    nb, nv, nt, ne = copy.deepcopy([b, v, t, e])
    for orig, new in zip((b, v, t, e), (nb, nv, nt, ne)):
        assert new.tolist() == orig.tolist() and new.stride() == orig.stride()
        assert new.storage_offset() == orig.storage_offset()
    with tensora.no_grad():
        nb.mul_(-1)
    assert nv.tolist() == [[-4.0, -6.0], [-8.0, -10.0]] and nt[1, 0].item() == -1.0 and ne[1, 3].item() == -3.0
    assert nv._version == nb._version == 1 and b._version == 0 and b[1, 0].item() == 4.0
    alone = copy.deepcopy(v)  # a view copied by itself is still the same values, strides and offset
    assert alone.tolist() == v.tolist() and alone.storage_offset() == v.storage_offset()


def test_grad_of_another_dtype_is_refused():
    a = tensora.ones(2, requires_grad=True)
    with pytest.raises(tensora.DTypeError, match="gradient with dtype int64 to a tensor with dtype float32"):
        a.grad = tensora.ones(2, dtype=tensora.int64)
    with pytest.raises(tensora.DTypeError, match="float64"):
        a.grad = tensora.ones(2, dtype=tensora.float64)
    a.grad = tensora.ones(2)
    assert a.grad.dtype == tensora.float32


def test_repr_of_an_expanded_tensor_reads_only_its_own_values():
    import tracemalloc

    t = tensora.ones(1).expand(2 * 10**8)  # 800 MB if materialised
    tracemalloc.start()
    try:
        text = repr(t)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert text == "tensor([1., 1., 1., ..., 1., 1., 1.])" and peak < 2**20
    assert repr(tensora.tensor([1.5, 2.0]).to(tensora.bfloat16).expand(2, 2)) == (
        "tensor([[1.5000, 2.0000],\n        [1.5000, 2.0000]], dtype=tensora.bfloat16)")


def test_to_an_unknown_device_and_a_dim_of_the_wrong_type_say_so():
    x = tensora.ones(2)
    with pytest.raises(tensora.DeviceError, match=r"to\('tpu'\): neither a device tensora has \(cpu, cuda\) nor a dtype"):
        x.to("tpu")
    assert x.to("float64").dtype == tensora.float64
    with pytest.raises(TypeError, match=r"dim must be an int, got 'a' \(str\)"):
        x.sum(dim="a")
