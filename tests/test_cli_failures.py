"""The `tensora` command when something fails midway: nothing half-written, the session kept, the real port.

- quantize checks its destination before converting anything, writes a directory whole or not
  at all, and names the destination (not a scratch file beside it) when writing fails;
- chat reports a failed turn in one line, drops that message and goes on;
- serve --port 0 prints the port it is given;
- a GGUF whose token list is shorter than its embedding is refused, not generated as empty text.
"""

from __future__ import annotations

import errno
import socket

import pytest
from serve.tiny import write_tiny_llama

import tensora.cli.chat as chat_cli
import tensora.cli.serve as serve_cli
import tensora.models.convert as convert
import tensora.serve
from tensora.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-cli-failures")
    write_tiny_llama(folder, layers=1, context=256)
    return folder


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/.scratch.tmp")


# -- quantize ----------------------------------------------------------------------------------

def test_quantize_to_a_directory_leaves_nothing_when_writing_fails(tiny, tmp_path, monkeypatch, capsys):
    """The weights are written last: a disk that fills then used to leave config.json and the tokenizer
    files, a folder that looks like a model and does not load."""
    monkeypatch.setattr(convert, "save", _disk_full)
    out = tmp_path / "out"
    assert main(["quantize", str(tiny), str(out), "--format", "int8"]) == 1
    err = _one_line_error(capsys, f"{out}: cannot be written", "No space left on device")
    assert ".scratch" not in err
    assert list(tmp_path.iterdir()) == []  # neither the destination nor the scratch directory beside it


def test_quantize_into_an_empty_directory_fills_it(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["quantize", str(tiny), str(out), "--format", "int8"]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in out.iterdir()}
    assert [f.name for f in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("case", ["non-empty directory", "gguf is a directory", "no parent", "dir is a file"])
def test_quantize_refuses_a_bad_destination_before_converting(tiny, tmp_path, monkeypatch, capsys, case):
    def no_work(*args, **kwargs):
        raise AssertionError("the source was loaded before the destination was checked")

    monkeypatch.setattr(convert, "load", no_work)
    monkeypatch.setattr(convert, "open_checkpoint", no_work)
    if case == "non-empty directory":
        dst, fragment = tmp_path / "out", "exists and is not empty"
        (dst / "model.safetensors").mkdir(parents=True)  # the review's reproducer
    elif case == "gguf is a directory":
        dst, fragment = tmp_path / "m.gguf", "is a directory"
        dst.mkdir()
    elif case == "no parent":
        dst, fragment = tmp_path / "missing" / "m.gguf", "does not exist"
    else:
        dst, fragment = tmp_path / "out", "is not a directory"
        dst.write_text("not a model")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["quantize", str(tiny), str(dst), "--format", "q8_0"]) == 1
    _one_line_error(capsys, str(dst), fragment)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_quantize_to_gguf_names_the_destination_when_writing_fails(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(convert, "save_gguf", _disk_full)
    out = tmp_path / "m.gguf"
    assert main(["quantize", str(tiny), str(out), "--format", "q8_0"]) == 1
    err = capsys.readouterr().err  # the progress bar, then the error
    assert "Traceback" not in err and err.endswith(f"{out}: cannot be written: No space left on device\n"), err
    assert "spill" not in err and ".scratch" not in err
    assert list(tmp_path.iterdir()) == []  # the spill directory is gone too


# -- chat --------------------------------------------------------------------------------------

def test_a_failed_chat_turn_is_one_line_and_the_conversation_goes_on(tiny, monkeypatch, capsys):
    from tensora.models import load

    model = load(tiny)
    prompts = []
    render = model.chat_prompt
    model.chat_prompt = lambda messages: prompts.append([m["content"] for m in messages]) or render(messages)
    monkeypatch.setattr(chat_cli, "load_model", lambda *a, **k: model)
    lines = iter(["hello", "word " * 300, "bad \udced text", "again"])  # past the context; a lone surrogate

    def type_line(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", type_line)
    assert main(["chat", str(tiny), "--max-tokens", "2", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 2 and "Traceback" not in err, err
    assert "exceeds the model's context" in err and "surrogate" in err
    assert out.count("2 tokens") == 2  # the first and last turns were answered
    assert prompts[-1][0] == "hello" and prompts[-1][2] == "again" and len(prompts[-1]) == 3  # failures dropped


def test_chat_without_a_chat_template_fails_before_the_first_turn(tiny, monkeypatch, capsys):
    from tensora.models import load

    model = load(tiny)
    model.tokenizer.chat_template = None
    monkeypatch.setattr(chat_cli, "load_model", lambda *a, **k: model)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked for a message it cannot answer"))
    assert main(["chat", str(tiny)]) == 1
    _one_line_error(capsys, "no chat template")


# -- serve -------------------------------------------------------------------------------------

def test_serve_on_port_0_prints_the_port_it_serves_on(monkeypatch, capsys):
    served = {}
    monkeypatch.setattr(serve_cli, "load_model", lambda *a, **k: object())
    monkeypatch.setattr(tensora.serve, "create_app", lambda *a, **k: object())
    monkeypatch.setattr(tensora.serve, "run", lambda app, host, port: served.update(host=host, port=port))
    assert main(["serve", "--port", "0"]) == 0
    port = served["port"]
    assert port != 0 and f"http://127.0.0.1:{port} " in capsys.readouterr().out
    with socket.socket() as s:  # released for uvicorn to bind
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


# -- GGUF vocabulary ---------------------------------------------------------------------------

def test_a_gguf_with_fewer_tokens_than_embedding_rows_is_refused(tiny, tmp_path, capsys):
    from tensora.io import load_gguf, save_gguf

    f = load_gguf(convert.quantize_checkpoint(tiny, tmp_path / "full.gguf", "f32", progress=False))
    meta, types = dict(f.metadata), dict(f.metadata_types)
    rows = meta["llama.vocab_size"]
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key in meta:
            meta[key] = list(meta[key])[:100]
    meta["tokenizer.ggml.eos_token_id"] = 5
    short = save_gguf(tmp_path / "short.gguf", dict(f.tensors), meta, metadata_types=types)
    assert main(["generate", str(short), "hi", "--max-tokens", "2"]) == 1
    _one_line_error(capsys, "short.gguf", "100 tokens", f"{rows} embedding rows")
