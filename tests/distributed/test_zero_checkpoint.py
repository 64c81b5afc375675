"""ZeRO-1 checkpoints are consolidated: saved at one world size, they resume at another.

One run in three legs, 4 steps each: 1 rank -> 2 ranks -> 3 ranks, then the 2-rank checkpoint resumed by one
plain process with plain Adam (2 -> 1). Reference: tensora.optim.Adam in this process over the same global
batches without a break.
"""

import sys

import numpy as np
import pytest

import tensora

from .mpi_launch import SCRIPTS, check_ok, requires_mpi, run_ranks

pytestmark = [requires_mpi, pytest.mark.slow]  # three mpirun starts: ~10 s on a busy 2-core machine
LEG = 4


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import common
        yield common
    finally:
        sys.path.remove(str(SCRIPTS))


def _reference(common, steps):
    model = common.make_model(0)
    common.train(model, tensora.optim.Adam(model.parameters(), lr=0.01), 0, steps)
    return common.flat_params(model)


def _params(model_state):
    return np.concatenate([model_state[k].numpy().ravel() for k in ("0.weight", "0.bias", "2.weight", "2.bias")])


def test_checkpoint_resumes_at_other_world_sizes(tmp_path, common):
    legs = [("-", 1, "at1"), ("at1", 2, "at2"), ("at2", 3, "at3")]
    for src, ranks, dst in legs:
        src_path = "-" if src == "-" else str(tmp_path / f"{src}.safetensors")
        check_ok(run_ranks(ranks, "zero_checkpoint.py", src_path, str(LEG), str(tmp_path / f"{dst}.safetensors"))[0])
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind

    final = tensora.load_checkpoint(tmp_path / "at3.safetensors")
    assert final.step == 3 * LEG
    assert np.abs(_params(final.model) - _reference(common, 3 * LEG)).max() < 1e-10
    assert sorted(final.optimizer["state"]) == [0, 1, 2, 3]  # every shard gathered, plain Adam's layout

    model = common.make_model(7)  # 2 -> 1: the file needs no process group to resume
    opt = tensora.optim.Adam(model.parameters(), lr=0.01)
    step = tensora.load_checkpoint(tmp_path / "at2.safetensors", model=model, optimizer=opt).step
    common.train(model, opt, step, step + LEG)
    assert np.abs(common.flat_params(model) - _reference(common, 3 * LEG)).max() < 1e-10
