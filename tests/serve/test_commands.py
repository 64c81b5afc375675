"""`tensora serve` (a real server process) and `tensora chat` (an interactive conversation)."""

from __future__ import annotations

import builtins
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from serve.tiny import client

from tensora.cli import main
from tensora.serve import BackgroundServer, create_app


def test_chat_streams_replies_and_keeps_the_conversation(tiny_path, tiny_model, monkeypatch, capsys):
    lines = iter(["hello", "", "and again", "/reset", "and again"])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", fake_input)
    assert main(["chat", str(tiny_path), "--max-tokens", "6", "--temperature", "0"]) == 0
    out = capsys.readouterr().out

    def reply(messages):
        return tiny_model.chat(messages, max_new_tokens=6, temperature=0).text

    first = reply([{"role": "user", "content": "hello"}])
    second = reply([{"role": "user", "content": "hello"}, {"role": "assistant", "content": first},
                    {"role": "user", "content": "and again"}])
    fresh = reply([{"role": "user", "content": "and again"}])
    assert second != fresh  # the history changes the reply, so the check below can tell
    replies = [part.split("\n[")[0] for part in out.split("assistant> ")[1:]]
    assert replies == [first, second, fresh]
    assert out.count("6 tokens") == 3


def test_memory_budget_reaches_the_loader_and_serving_still_decodes(tiny_path, tiny_model):
    from tensora.cli.serve import load_model
    from tensora.models.batching import BatchDecoder
    from tensora.models.generation import SamplingOptions

    budgeted = load_model(str(tiny_path), memory_budget="64MiB")
    assert budgeted.memory is not None
    prompt = tiny_model.chat_prompt([{"role": "user", "content": "hi"}])
    dec = BatchDecoder(budgeted)
    seq = dec.join(prompt, SamplingOptions(max_new_tokens=5, temperature=0))
    while dec.active:
        dec.step()
    assert seq.completion().token_ids == tiny_model.generate(prompt, max_new_tokens=5, temperature=0).token_ids
    app = create_app(budgeted, model_id="tiny")
    with BackgroundServer(app) as server:
        report = httpx.get(server.url + "/v1/memory").json()["models"][0]
    assert "tier" in report["tiers"] and "host" in report["tiers"] and report["held_bytes"] > 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("flags", [[], ["--quantize", "q8_0", "--memory-budget", "8MiB"]], ids=["dense", "budget"])
def test_serve_command_runs_a_server(tiny_path, flags):
    port = _free_port()
    cmd = [sys.executable, "-m", "tensora.cli", "serve", str(tiny_path), "--port", str(port), "--api-key", "k",
           "--max-batch", "2", "--model-id", "tiny", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)

        class Server:
            pass

        server = Server()
        server.url = url
        r = client(server, api_key="k").chat.completions.create(model="tiny", messages=[{"role": "user",
                                                                                          "content": "hi"}],
                                                                 max_tokens=3)
        assert r.usage.completion_tokens == 3
        assert httpx.get(url + "/v1/models").status_code == 401
        assert "<title>tensora chat</title>" in httpx.get(url + "/").text
        (report,) = httpx.get(url + "/v1/memory", headers={"Authorization": "Bearer k"}).json()["models"]
        if flags:  # the flags reached the loader: q8_0 weights, and tiers under the budget
            assert "q8_0" in report["by_format"] and report["multiplier"] > 3
            assert report["tiers"] and "8.0 MiB" in report["tiers"]
        else:
            assert set(report["by_format"]) == {"float32"} and report["tiers"] is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "serving 'tiny'" in proc.stdout.read()
