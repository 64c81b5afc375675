"""Shared test setup.

`.ci/run` sets TENSORA_REQUIRE_NATIVE=1 for the run that must use the compiled
extension, so a build that silently fell back to NumPy fails loudly instead of
passing twice on the same path.
"""

import os

import numpy as np
import pytest

import tensora


def pytest_report_header(config):
    ok, why = tensora.native_available()
    return f"tensora native extension: {'on' if ok else 'off'} ({why})"


def pytest_sessionstart(session):
    if os.environ.get("TENSORA_REQUIRE_NATIVE") == "1":
        ok, why = tensora.native_available()
        if not ok:
            raise pytest.UsageError(f"TENSORA_REQUIRE_NATIVE=1 but the extension is not in use: {why}")


@pytest.fixture(autouse=True)
def _seed():
    tensora.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
