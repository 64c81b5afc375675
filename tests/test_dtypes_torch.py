"""Promotion rules against PyTorch itself (test extra)."""

import itertools

import pytest

import tensora
from tensora import dtypes as dt

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

NAMES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"]


@pytest.mark.parametrize("a, b", list(itertools.product(NAMES, NAMES)))
def test_promote_types_equals_torch(a, b):
    want = torch.promote_types(getattr(torch, a), getattr(torch, b))
    assert dt.promote_types(dt.get_dtype(a), dt.get_dtype(b)).name == str(want).removeprefix("torch.")


SCALARS = [True, 3, 2.5]


@pytest.mark.parametrize("a, b", list(itertools.product(NAMES, NAMES)))
def test_result_type_with_zero_dim_equals_torch(a, b):
    ta, tb = torch.zeros(2, dtype=getattr(torch, a)), torch.zeros((), dtype=getattr(torch, b))
    xa, xb = tensora.zeros(2, dtype=a), tensora.zeros((), dtype=b)
    assert dt.result_type(xa, xb).name == str(torch.result_type(ta, tb)).removeprefix("torch.")


@pytest.mark.parametrize("a, s", list(itertools.product(NAMES, SCALARS)))
def test_result_type_with_scalar_equals_torch(a, s):
    ta, xa = torch.zeros(2, dtype=getattr(torch, a)), tensora.zeros(2, dtype=a)
    assert dt.result_type(xa, s).name == str(torch.result_type(ta, s)).removeprefix("torch.")


def test_float8_casts_saturate_or_overflow_as_torch():
    values = [1e6, 500.0, 448.0, 300.0, float("inf"), -1e6, float("-inf"), float("nan"), 60000.0, 1e-9]
    for name in ("float8_e4m3fn", "float8_e5m2"):  # e4m3fn saturates at 448 (no infinity); e5m2 overflows to inf
        ours = tensora.tensor(values).to(getattr(tensora, name)).float().tolist()
        theirs = torch.tensor(values).to(getattr(torch, name)).float().tolist()
        assert str(ours) == str(theirs), name  # str: NaN == NaN
