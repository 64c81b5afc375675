"""The fixtures the native-kernel tests share."""

from __future__ import annotations

import pytest

from tensora.backend import native


@pytest.fixture(scope="session")
def lib():
    """tensora._C. Skips when TENSORA_NO_NATIVE disables it; fails when it is missing
    otherwise, so a build that silently lost its extension does not pass."""
    module = native.load()
    if module is None:
        _, reason = native.status()
        if reason.startswith("disabled by"):
            pytest.skip(reason)
        pytest.fail(f"tensora._C did not load: {reason}")
    return module


@pytest.fixture(params=["avx2", "baseline"])
def simd(request, lib):
    """Runs the test once per instruction-set variant of the native loops (a test file with
    more variants, such as VNNI, defines its own)."""
    try:
        lib.set_simd(request.param)
    except ValueError:
        pytest.skip(f"no {request.param} loops on this CPU or build")
    yield request.param
    lib.set_simd("auto")
