"""Sequential, ModuleList, ModuleDict: indexing, mutation, registration, repr (torch's layouts)."""

from collections import OrderedDict

import numpy as np
import pytest

import tensora
from tensora import nn


def _lins(n):
    return [nn.Linear(i + 1, i + 2) for i in range(n)]


def test_sequential_forward_matches_manual_chain():
    a, b = nn.Linear(3, 4), nn.Linear(4, 2)
    seq = nn.Sequential(a, nn.Tanh(), b)
    x = tensora.randn(5, 3)
    np.testing.assert_allclose(seq(x).detach().numpy(), b(a(x).tanh()).detach().numpy())


def test_sequential_indexing_slicing_and_ordered_dict():
    mods = _lins(3)
    seq = nn.Sequential(*mods)
    assert seq[0] is mods[0] and seq[-1] is mods[2] and len(seq) == 3 and list(seq) == mods
    sub = seq[1:]
    assert type(sub) is nn.Sequential and list(sub) == mods[1:] and list(sub._modules) == ["1", "2"]
    with pytest.raises(IndexError):
        seq[3]
    named = nn.Sequential(OrderedDict([("enc", mods[0]), ("dec", mods[1])]))
    assert named.enc is mods[0] and [n for n, _ in named.named_parameters()][0] == "enc.weight"


def test_sequential_mutation_renumbers():
    mods = _lins(4)
    seq = nn.Sequential(*mods[:2])
    seq.append(mods[2]).extend([mods[3]])
    assert list(seq._modules) == ["0", "1", "2", "3"]
    del seq[1]
    assert list(seq._modules) == ["0", "1", "2"] and list(seq) == [mods[0], mods[2], mods[3]]
    seq.insert(1, mods[1])
    assert list(seq) == mods
    seq[0] = nn.Identity()
    assert isinstance(seq[0], nn.Identity)
    assert seq.pop(-1) is mods[3] and len(seq) == 3
    del seq[0:2]
    assert list(seq) == [mods[2]]
    both = nn.Sequential(mods[0]) + nn.Sequential(mods[1])
    assert list(both) == mods[:2]
    both += nn.Sequential(mods[2])
    assert list(both) == mods[:3]
    with pytest.raises(ValueError):
        both + nn.ModuleList()
    with pytest.raises(TypeError):
        both.insert(0, "x")


def test_module_list():
    mods = _lins(3)
    ml = nn.ModuleList(mods[:2])
    ml.append(mods[2])
    assert len(ml) == 3 and ml[-1] is mods[2] and list(ml) == mods
    assert [n for n, _ in ml.named_parameters()][:2] == ["0.weight", "0.bias"]
    assert list(ml[1:]) == mods[1:] and type(ml[1:]) is nn.ModuleList
    ml[0] = nn.Identity()
    del ml[0]
    assert list(ml) == mods[1:] and list(ml._modules) == ["0", "1"]
    ml.insert(0, mods[0])
    assert list(ml) == mods
    ml += [nn.ReLU()]
    assert len(ml) == 4 and len(ml + [nn.ReLU()]) == 5
    assert ml.pop(3).__class__ is nn.ReLU
    with pytest.raises(TypeError):
        ml.extend(3)
    with pytest.raises(IndexError):
        ml[10]
    assert "0" not in dir(ml)


def test_module_list_repr_folds_repeats():
    ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)])
    assert repr(ml) == ("ModuleList(\n"
                        "  (0-1): 2 x Linear(in_features=2, out_features=2, bias=True)\n"
                        "  (2): ReLU()\n"
                        "  (3): Linear(in_features=2, out_features=2, bias=True)\n"
                        ")")
    assert repr(nn.ModuleList()) == "ModuleList()"


def test_module_dict():
    a, b = nn.Linear(2, 2), nn.ReLU()
    md = nn.ModuleDict({"a": a})
    md.update([("b", b)])
    assert list(md.keys()) == ["a", "b"] and list(md.values()) == [a, b] and "a" in md and len(md) == 2
    assert md["a"] is a and dict(md.items())["b"] is b and list(md) == ["a", "b"]
    md["c"] = nn.Tanh()
    assert md.pop("c").__class__ is nn.Tanh
    del md["b"]
    assert list(md) == ["a"]
    md.clear()
    assert len(md) == 0
    with pytest.raises(TypeError):
        md.update(3)
    with pytest.raises(ValueError):
        md.update([("x", a, 1)])
