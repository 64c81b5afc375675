"""The process-group seams that need no MPI job: backend registry, NCCL's message, use before init."""

import pytest

import tensora
import tensora.distributed as dist
from tensora.cli.launch import mpirun_command


def test_nccl_says_it_needs_the_cuda_backend():
    with pytest.raises(dist.DistributedError, match=r"nccl.*CUDA backend.*issue \[I\].*backend='mpi'"):
        dist.init_process_group("nccl")
    assert not dist.is_initialized()


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(dist.DistributedError, match=r"\['mpi', 'nccl'\]"):
        dist.init_process_group("gloo")


def test_collectives_before_init_are_refused():
    with pytest.raises(dist.DistributedError, match="init_process_group"):
        dist.all_reduce(tensora.ones(2))
    with pytest.raises(dist.DistributedError, match="init_process_group"):
        dist.get_rank()


def test_launch_adds_open_mpi_flags(monkeypatch, tmp_path):
    fake = tmp_path / "mpirun"  # an Open MPI look-alike: only --version is ever run here
    fake.write_text("#!/bin/sh\necho 'mpirun (Open MPI) 5.0.0'\n")
    fake.chmod(0o755)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    argv, env = mpirun_command(str(fake), 4, ["train.py", "--lr", "1"])
    assert argv[:4] == [str(fake), "-n", "4", "--oversubscribe"]
    assert argv[-3:] == ["train.py", "--lr", "1"]
    argv, _ = mpirun_command(str(fake), 2, ["train.py"])
    assert "--oversubscribe" not in argv
