"""Training checkpoints: resuming gives bit-for-bit the run that never stopped.

The model, optimizer and scheduler are small stand-ins written here (the real
ones arrive with issue [C]); they only need state_dict()/load_state_dict(). The
reference is the uninterrupted run itself, compared exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from safetensors import safe_open

import tensora
import tensora.io as tio
from tensora.io import tree


class Linear:
    def __init__(self, seed: int) -> None:
        self.w = tensora.randn(8, 1, generator=tensora.Generator().manual_seed(seed)).numpy().copy()

    def state_dict(self) -> dict:
        return {"w": tensora.from_numpy(self.w.copy())}

    def load_state_dict(self, sd: dict) -> None:
        self.w = sd["w"].numpy().copy()


class Momentum:
    """SGD with momentum; state keyed by parameter index (an int, as torch optimizers do)."""

    def __init__(self, lr: float = 0.05, beta: float = 0.9) -> None:
        self.groups = [{"lr": lr, "beta": beta, "betas": (beta, 0.999), "eps": float("inf")}]
        self.state: dict = {}

    def step(self, model: Linear, grad: np.ndarray) -> None:
        buf = self.state.setdefault(0, {"buf": np.zeros_like(grad), "n": np.int64(0)})
        buf["buf"] = self.groups[0]["beta"] * buf["buf"] + grad
        buf["n"] += 1
        model.w = model.w - self.groups[0]["lr"] * buf["buf"]

    def state_dict(self) -> dict:
        return {"state": {k: {"buf": tensora.from_numpy(v["buf"].copy()), "n": v["n"]} for k, v in self.state.items()},
                "param_groups": [dict(g) for g in self.groups]}

    def load_state_dict(self, sd: dict) -> None:
        self.state = {k: {"buf": v["buf"].numpy().copy(), "n": v["n"]} for k, v in sd["state"].items()}
        self.groups = [dict(g) for g in sd["param_groups"]]


class Decay:
    def __init__(self, opt: Momentum) -> None:
        self.opt, self.epoch = opt, 0

    def step(self) -> None:
        self.epoch += 1
        self.opt.groups[0]["lr"] *= 0.9

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, sd: dict) -> None:
        self.epoch = sd["epoch"]


def train(model, opt, sched, gen, steps):
    for _ in range(steps):
        x = tensora.randn(16, 8, generator=gen).numpy()
        y = x @ np.arange(8, dtype=np.float32)[:, None]
        keep = (tensora.rand(16, 1, generator=gen).numpy() > 0.1).astype(np.float32)  # dropout-like draw
        grad = x.T @ (keep * (x @ model.w - y)) / 16
        opt.step(model, grad)
        sched.step()


def _fresh(seed):
    model = Linear(seed)
    opt = Momentum()
    return model, opt, Decay(opt), tensora.Generator().manual_seed(seed + 100)


def test_resume_is_bit_identical_to_not_stopping(tmp_path):
    model, opt, sched, gen = _fresh(0)
    train(model, opt, sched, gen, 10)
    reference = (model.w.copy(), tensora.randn(3, generator=gen).tolist())

    model, opt, sched, gen = _fresh(0)
    train(model, opt, sched, gen, 4)
    path = tio.save_checkpoint(tmp_path / "ckpt.safetensors", model=model, optimizer=opt, scheduler=sched,
                               step=4, rng=gen, extra={"note": "mid-run"})
    del model, opt, sched, gen

    model, opt, sched, gen = _fresh(123)  # different init and seed: everything must come from the file
    ckpt = tio.load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, rng=gen)
    assert ckpt.step == 4 and ckpt.extra == {"note": "mid-run"} and sched.epoch == 4
    train(model, opt, sched, gen, 6)
    np.testing.assert_array_equal(model.w, reference[0])
    assert tensora.randn(3, generator=gen).tolist() == reference[1]


def test_checkpoint_is_one_safetensors_file_with_json_state(tmp_path):
    model, opt, sched, gen = _fresh(0)
    train(model, opt, sched, gen, 1)
    path = tio.save_checkpoint(tmp_path / "c.safetensors", model=model, optimizer=opt, step=1,
                               rng={"data": gen, "dropout": tensora.Generator().manual_seed(5)})
    with safe_open(str(path), "np") as f:  # the reference reader sees plain tensors and metadata
        assert f.metadata()["format"] == "tensora.checkpoint"
        assert set(f.keys()) == {"model/w", "optimizer/state/0/buf", "optimizer/state/0/n"}
    ckpt = tio.load_checkpoint(path)
    assert set(ckpt.rng) == {"data", "dropout"} and ckpt.scheduler is None
    assert ckpt.optimizer["param_groups"][0]["betas"] == (0.9, 0.999)
    assert ckpt.optimizer["param_groups"][0]["eps"] == math.inf
    assert isinstance(ckpt.optimizer["state"][0]["n"], np.int64)
    g = tensora.Generator()
    tio.load_checkpoint(path, rng={"data": g, "dropout": tensora.Generator()})
    assert g.get_state() == gen.get_state()


@pytest.mark.parametrize("value", [
    {1: "int key", (2, 3): "tuple key", None: 0, 2.5: "float key", False: "bool key"},
    {"__tensor__": "looks like a tag", "__dict__": 1},
    [float("nan"), float("-inf"), 1e308, -0.0, "", None, True, 2**62],
    (1, (2, [3, {"a": ()}])),
    {"arr": np.arange(6, dtype=np.int16).reshape(2, 3), "f16": np.float16(0.5), "u8": np.uint8(7)},
])
def test_tree_encoding_round_trips_exactly(value):
    tensors: dict = {}
    encoded = tree.encode(value, "x", tensors)
    import json
    text = json.dumps(encoded, allow_nan=False)
    cpu = {k: (tensora.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in tensors.items()}
    back = tree.decode(json.loads(text), cpu, "<test>")
    _assert_same(back, value)


def _assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(b, dict):
        assert list(a) == list(b)
        for k in b:
            _assert_same(a[k], b[k])
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(b, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(b, float) and math.isnan(b):
        assert math.isnan(a)
    else:
        assert a == b and (not isinstance(b, float) or math.copysign(1, a) == math.copysign(1, b))


def test_tensors_keep_dtype_and_values(tmp_path):
    t = tensora.tensor([1.5, -2.0], dtype=tensora.bfloat16)
    path = tio.save_checkpoint(tmp_path / "c.safetensors", extra={"t": t, "same": t})
    extra = tio.load_checkpoint(path).extra
    assert extra["t"].dtype == tensora.bfloat16 and extra["t"].tolist() == [1.5, -2.0]
    assert extra["same"].tolist() == [1.5, -2.0]
    assert extra["t"].numpy().flags.owndata  # read into memory: the file may be replaced by the next save


def test_unstorable_values_name_their_place(tmp_path):
    with pytest.raises(TypeError, match="'optimizer/state/0/fn'"):
        tio.save_checkpoint(tmp_path / "c.safetensors", optimizer={"state": {0: {"fn": print}}})
    assert not list(tmp_path.iterdir())


def test_loading_errors(tmp_path):
    plain = tio.save({"w": tensora.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(tio.FormatError, match="not a tensora checkpoint"):
        tio.load_checkpoint(plain)
    path = tio.save_checkpoint(tmp_path / "c.safetensors", model={"w": tensora.ones(2)})
    with pytest.raises(tio.FormatError, match="no optimizer state"):
        tio.load_checkpoint(path, optimizer=Momentum())
    with pytest.raises(tio.FormatError, match="no rng state"):
        tio.load_checkpoint(path, rng=tensora.Generator())
    for state, fragment in [("{not json", "not valid JSON"), ('{"version": 99}', "version 99"),
                            ('{"version": 1, "model": {"__tensor__": "nope"}}', "missing tensor"),
                            ('{"version": 1, "model": {"__float__": "x"}}', "non-finite"),
                            ('{"version": 1, "model": {"__tuple__": 3}}', "malformed"),
                            ('{"version": 1, "model": {"__dict__": [[[1], 2]]}}', "not hashable")]:
        bad = tio.save({"w": tensora.ones(1)}, tmp_path / "bad.safetensors",
                       metadata={"format": "tensora.checkpoint", "tensora.checkpoint": state})
        with pytest.raises(tio.FormatError, match=fragment):
            tio.load_checkpoint(bad)
