"""Module and Parameter: registration, traversal, state_dict, modes, dtype moves, hooks, repr.

References: the behaviour torch.nn.Module documents (checked side by side in test_nn_torch.py),
and NumPy float64 values for the numbers that move through state_dict / to().
"""

import copy

import numpy as np
import pytest

import tensora
from tensora import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(4, 2, bias=False)
        self.register_buffer("steps", tensora.zeros((), dtype=tensora.int64))
        self.register_buffer("cache", tensora.ones(2), persistent=False)
        self.scale = nn.Parameter(tensora.ones(1))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale


# -- Parameter ----------------------------------------------------------------------------------

def test_parameter_is_a_leaf_tensor_subclass_that_requires_grad():
    data = tensora.tensor([1.0, 2.0])
    p = nn.Parameter(data)
    assert isinstance(p, tensora.Tensor) and p.requires_grad and p.is_leaf and p._base is None
    assert nn.Parameter(data, requires_grad=False).requires_grad is False
    assert nn.Parameter().shape == (0,)
    # Like torch, it wraps the data's memory (no copy).
    assert p.data_ptr() == data.data_ptr()
    with pytest.raises(TypeError):
        nn.Parameter(np.ones(2))


def test_parameter_repr():
    assert repr(nn.Parameter(tensora.tensor([1.0, 2.0]))) == \
        "Parameter containing:\ntensor([1., 2.], requires_grad=True)"


def test_parameter_in_ops_and_optimizer_style_update():
    p = nn.Parameter(tensora.tensor([1.0, -2.0, 3.0], dtype=tensora.float64))
    loss = (p * p).sum() + tensora.relu(p).sum()
    loss.backward()
    np.testing.assert_allclose(p.grad.numpy(), 2 * np.array([1.0, -2.0, 3.0]) + np.array([1, 0, 1]))
    v0 = p._version
    with tensora.no_grad():
        p.sub_(0.5 * p.grad)
    np.testing.assert_allclose(p.detach().numpy(), [1 - 1.5, -2 + 2.0, 3 - 3.5])
    assert p._version == v0 + 1 and p.requires_grad and p.is_leaf
    with pytest.raises(tensora.AutogradError):
        p.sub_(1.0)  # in place on a leaf that requires grad, outside no_grad


def test_parameter_deepcopy_copies_values():
    p = nn.Parameter(tensora.tensor([1.0, 2.0]), requires_grad=False)
    q = copy.deepcopy(p)
    assert type(q) is nn.Parameter and q.requires_grad is False and q.data_ptr() != p.data_ptr()
    np.testing.assert_array_equal(q.numpy(), p.numpy())


def test_integer_parameter_cannot_require_grad():
    with pytest.raises(TypeError):
        nn.Parameter(tensora.tensor([1, 2]))
    assert nn.Parameter(tensora.tensor([1, 2]), requires_grad=False).dtype is tensora.int64


# -- registration ----------------------------------------------------------------------------------

def test_setattr_registers_parameters_modules_buffers():
    net = Net()
    assert list(net._parameters) == ["scale"]
    assert list(net._modules) == ["fc1", "act", "fc2"]
    assert list(net._buffers) == ["steps", "cache"]
    assert net.fc2.bias is None and "bias" in net.fc2._parameters
    net.plain = 3
    assert net.plain == 3 and "plain" in net.__dict__
    # Reassigning a registered buffer with a tensor keeps it a buffer.
    net.steps = tensora.tensor(5)
    assert net._buffers["steps"].item() == 5


def test_setattr_type_errors_and_reassignment():
    net = Net()
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'scale'"):
        net.scale = tensora.ones(1)
    net.scale = None
    assert net._parameters["scale"] is None
    with pytest.raises(TypeError, match="child module 'fc1'"):
        net.fc1 = tensora.ones(1)
    net.fc1 = None
    assert net.fc1 is None and list(net.children())[0] is net.act
    # A Parameter assigned over a plain attribute replaces it.
    net.plain = 1
    net.plain = nn.Parameter(tensora.zeros(1))
    assert "plain" in net._parameters and "plain" not in net.__dict__


def test_register_errors():
    m = nn.Module()
    with pytest.raises(KeyError, match="contain"):
        m.register_parameter("a.b", None)
    with pytest.raises(KeyError, match="empty"):
        m.register_buffer("", None)
    with pytest.raises(TypeError):
        m.register_parameter("w", tensora.ones(2))
    m.x = 1
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("x", tensora.ones(1))
    with pytest.raises(TypeError):
        m.add_module("y", 3)
    nonleaf = nn.Parameter(tensora.ones(2)) * 2
    bad = nn.Parameter(tensora.ones(2))
    bad.grad_fn = nonleaf.grad_fn
    with pytest.raises(ValueError, match="non-leaf"):
        m.register_parameter("z", bad)

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(tensora.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_buffer_class_registers_persistence():
    m = nn.Module()
    m.keep = nn.Buffer(tensora.ones(2))
    m.tmp = nn.Buffer(tensora.ones(2), persistent=False)
    assert list(m.state_dict()) == ["keep"] and set(m._buffers) == {"keep", "tmp"}


def test_delattr_and_getattr_errors():
    net = Net()
    del net.scale, net.cache, net.act
    assert "scale" not in net._parameters and "cache" not in net._buffers and "act" not in net._modules
    with pytest.raises(AttributeError, match="'Net' object has no attribute 'nope'"):
        net.nope
    with pytest.raises(AttributeError, match='missing the required "forward"'):
        nn.Module()(1)


# -- traversal --------------------------------------------------------------------------------------

def test_named_members_and_duplicates():
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, nn.Tanh(), shared)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert [n for n, _ in seq.named_parameters(remove_duplicate=False)] == ["0.weight", "0.bias", "2.weight",
                                                                              "2.bias"]
    assert [n for n, _ in seq.named_modules()] == ["", "0", "1"]
    assert [n for n, _ in seq.named_modules(remove_duplicate=False)] == ["", "0", "1", "2"]
    assert [n for n, _ in seq.named_children()] == ["0", "1"]
    net = Net()
    assert [n for n, _ in net.named_parameters(prefix="m")] == ["m.scale", "m.fc1.weight", "m.fc1.bias",
                                                               "m.fc2.weight"]
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in net.named_buffers()] == ["steps", "cache"]
    assert len(list(net.parameters())) == 4 and len(list(net.buffers())) == 2 and len(list(net.modules())) == 4


def test_get_submodule_parameter_buffer():
    outer = nn.Sequential(Net())
    assert outer.get_submodule("") is outer
    assert outer.get_submodule("0.fc1") is outer[0].fc1
    assert outer.get_parameter("0.fc1.weight") is outer[0].fc1.weight
    assert outer.get_buffer("0.steps") is outer[0].steps
    with pytest.raises(AttributeError, match="has no attribute `zz`"):
        outer.get_submodule("0.zz")
    with pytest.raises(AttributeError, match="is not an nn.Module"):
        outer.get_submodule("0.fc1.weight")
    with pytest.raises(AttributeError, match="is not an nn.Parameter"):
        outer.get_parameter("0.steps")
    with pytest.raises(AttributeError, match="is not a buffer"):
        outer.get_buffer("0.scale")


def test_dir_lists_registered_names():
    names = dir(Net())
    for n in ("fc1", "scale", "steps", "forward", "state_dict"):
        assert n in names


# -- state dict --------------------------------------------------------------------------------------

def test_state_dict_contents():
    net = Net()
    sd = net.state_dict()
    assert list(sd) == ["scale", "steps", "fc1.weight", "fc1.bias", "fc2.weight"]
    assert not sd["fc1.weight"].requires_grad and type(sd["fc1.weight"]) is tensora.Tensor
    assert sd["fc1.weight"].data_ptr() == net.fc1.weight.data_ptr()  # detached, not copied
    assert net.state_dict(keep_vars=True)["scale"] is net.scale
    assert list(net.state_dict(prefix="p.")) [0] == "p.scale"


def test_load_state_dict_copies_in_place_and_casts():
    a, b = Net(), Net()
    ids = {n: p.data_ptr() for n, p in b.named_parameters()}
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
        assert q.data_ptr() == ids[n]
    # NumPy arrays of another dtype load too (cast to the parameter's dtype).
    sd = {k: v.numpy().astype(np.float64) for k, v in a.state_dict().items()}
    b.load_state_dict(sd)
    assert b.fc1.weight.dtype is tensora.float32


def test_load_state_dict_reports_missing_unexpected_and_shapes():
    net = Net()
    sd = net.state_dict()
    del sd["fc1.bias"]
    sd["fc1.extra"] = tensora.ones(1)
    sd["other.weight"] = tensora.ones(1)
    sd["fc2.weight"] = tensora.ones(3, 3)
    with pytest.raises(RuntimeError) as err:
        net.load_state_dict(sd)
    msg = str(err.value)
    assert msg.startswith("Error(s) in loading state_dict for Net:\n\tMissing key(s) in state_dict: \"fc1.bias\". ")
    assert 'Unexpected key(s) in state_dict: "other.weight", "fc1.extra". ' in msg
    assert ("size mismatch for fc2.weight: copying a param with shape tensora.Size([3, 3]) from checkpoint, the "
            "shape in current model is tensora.Size([2, 4]).") in msg
    # strict=False still reports (and raises on the shape mismatch).
    del sd["fc2.weight"]
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["fc1.bias", "fc2.weight"] and result.unexpected_keys == ["other.weight",
                                                                                           "fc1.extra"]


def test_load_state_dict_assign_and_scalar_from_one_element():
    net = Net()
    sd = Net().state_dict()
    sd["steps"] = tensora.tensor([7])  # a (1,) tensor loads into a 0-d buffer
    w = sd["fc1.weight"]
    net.load_state_dict(sd, assign=True)
    assert isinstance(net.fc1.weight, nn.Parameter) and net.fc1.weight.requires_grad
    assert net.fc1.weight.data_ptr() == w.data_ptr() and net.steps.item() == 7
    with pytest.raises(TypeError):
        net.load_state_dict([("a", 1)])


# -- modes, grads, dtypes ----------------------------------------------------------------------------------

def test_train_eval_propagate():
    net = nn.Sequential(Net(), nn.Dropout())
    assert net.eval() is net and not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError):
        net.train("yes")


def test_zero_grad_and_requires_grad_():
    net = Net()
    net(tensora.randn(2, 3)).sum().backward()
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert net.requires_grad_(False) is net and not any(p.requires_grad for p in net.parameters())


def test_apply_visits_children_first():
    net = Net()
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "ReLU", "Linear", "Net"]


def test_to_dtype_keeps_parameter_identity_and_integer_buffers():
    net = Net()
    params = list(net.parameters())
    values = [p.detach().numpy().astype(np.float64) for p in params]
    net(tensora.randn(2, 3)).sum().backward()
    assert net.to(tensora.float64) is net
    for p, v, q in zip(net.parameters(), values, params):
        assert p is q and p.dtype is tensora.float64 and p.grad.dtype is tensora.float64
        np.testing.assert_array_equal(p.detach().numpy(), v)
    assert net.steps.dtype is tensora.int64 and net.cache.dtype is tensora.float64
    net.half()
    assert net.fc1.weight.dtype is tensora.float16
    net.float()
    assert net.fc1.weight.dtype is tensora.float32
    net.bfloat16()
    assert net.fc1.weight.dtype is tensora.bfloat16
    net.double()
    assert net.fc1.weight.dtype is tensora.float64
    net.to(tensora.zeros(1, dtype=tensora.float32))
    assert net.fc1.weight.dtype is tensora.float32
    net.to("cpu", dtype="float64")
    assert net.scale.dtype is tensora.float64 and net.cpu() is net
    with pytest.raises(TypeError, match="floating point"):
        net.to(tensora.int32)
    net.type(tensora.float32)
    assert net.steps.dtype is tensora.float32


# -- repr ------------------------------------------------------------------------------------------------

def test_repr_tree():
    assert repr(Net()) == (
        "Net(\n"
        "  (fc1): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (act): ReLU()\n"
        "  (fc2): Linear(in_features=4, out_features=2, bias=False)\n"
        ")")
    nested = nn.Sequential(nn.Sequential(nn.Identity()), nn.Dropout(0.2))
    assert repr(nested) == ("Sequential(\n  (0): Sequential(\n    (0): Identity()\n  )\n"
                            "  (1): Dropout(p=0.2, inplace=False)\n)")

    class Multi(nn.Module):
        def extra_repr(self):
            return "a=1\nb=2"

    assert repr(Multi()) == "Multi(\n  a=1\n  b=2\n)"


def test_module_init_takes_no_arguments():
    with pytest.raises(TypeError):
        nn.Module(1)


def test_deepcopy_of_batch_norm_copies_statistics_and_mode():
    # Reference: the original module, whose running statistics the copy must equal and then leave alone.
    bn = nn.BatchNorm2d(3, momentum=0.5)
    bn(tensora.randn(4, 3, 2, 2) * 3 + 1)
    bn.eval()
    c = copy.deepcopy(bn)
    assert not c.training and c.momentum == 0.5 and type(c.weight) is nn.Parameter
    for name, buf in bn.named_buffers():
        got = c.get_buffer(name)
        assert got.dtype is buf.dtype and got.data_ptr() != buf.data_ptr(), name
        np.testing.assert_array_equal(got.numpy(), buf.numpy())
    x = tensora.randn(2, 3, 2, 2)
    np.testing.assert_array_equal(c(x).detach().numpy(), bn(x).detach().numpy())
    c.train()
    c(x)
    assert bn.num_batches_tracked.item() == 1 and c.num_batches_tracked.item() == 2


def test_deepcopy_of_a_model_keeps_tied_weights_tied():
    emb = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    model = nn.Sequential(emb, head)
    c = copy.deepcopy(model)
    assert c[1].weight is c[0].weight and c[0].weight is not emb.weight
    assert len(list(c.parameters())) == 1
