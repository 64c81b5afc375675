"""examples/offload_generate.py: the embedded model as a float32 checkpoint 16x its host budget, quantized on
load and streamed layer by layer, generates exactly what the same quantized model does without a budget."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tensora.models import DefaultModelMissing, default_model_path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "offload_generate.py"


@pytest.mark.slow
def test_offload_example_matches_the_unconstrained_model():
    try:
        default_model_path()
    except DefaultModelMissing as exc:
        pytest.skip(str(exc))
    spec = importlib.util.spec_from_file_location("examples_offload_generate", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example
    spec.loader.exec_module(example)
    result = example.main(tokens=6, check=True, verbose=False)
    tracker = result["tracker"]
    assert len(result["tokens"]) == 6 and result["tokens"] == result["unconstrained"]
    assert tracker.multiplier() >= 16  # float32 bytes over the host peak, which the budget bounds
    assert tracker.moved["disk->host"] > tracker.full_precision_bytes / 16  # it really streamed
