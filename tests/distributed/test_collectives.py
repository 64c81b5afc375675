"""Every collective and point-to-point op on 2 and 3 real MPI ranks, checked against NumPy in the script."""

import pytest

from .mpi_launch import check_ok, requires_mpi, run_ranks

pytestmark = requires_mpi


@pytest.mark.parametrize("ranks", [2, 3])
def test_collectives_match_numpy(ranks):
    proc, _ = run_ranks(ranks, "collectives.py")
    check_ok(proc)
    assert proc.stdout.count("collectives ok") == ranks
