"""The fixture every native-kernel test shares."""

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
