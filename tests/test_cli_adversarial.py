"""The `tensora` command against careless input: one clear line and a non-zero exit, no traceback.

Bad option values are refused while the arguments are parsed (exit 2, argparse's usage and
one error line naming the option), before a model is loaded; a failure of the command
itself is one line and exit 1, with the traceback only under --debug (before or after the
command's name). A failure midway leaves nothing half-written (see the section at the end).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import sys
import threading
import time

import pytest
from serve.tiny import write_tiny_llama

import tensora.cli.chat as chat_cli
import tensora.cli.serve as serve_cli
import tensora.models.convert as convert
import tensora.serve
from tensora.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-cli")
    write_tiny_llama(folder, layers=1, context=256)
    return folder


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


BAD_OPTIONS = [  # argv after the model path, the fragment of argparse's error line
    (["generate", "--prompt", "hi", "--max-tokens", "0"], "argument --max-tokens: must be at least 1, got 0"),
    (["generate", "--prompt", "hi", "--max-tokens", "many"], "argument --max-tokens: expected an integer"),
    (["generate", "--prompt", "hi", "--seed", "-1"], "argument --seed: must be at least 0"),
    (["generate", "--prompt", "hi", "--top-p", "0"], "argument --top-p: must lie in (0, 1]"),
    (["generate", "--prompt", "hi", "--top-p", "1.5"], "argument --top-p: must lie in (0, 1]"),
    (["generate", "--prompt", "hi", "--temperature", "nan"], "argument --temperature: must lie in [0, inf)"),
    (["generate", "--prompt", "hi", "--temperature", "inf"], "argument --temperature: must lie in [0, inf), got inf"),
    (["chat", "--top-p", "inf"], "argument --top-p: must lie in (0, 1]"),
    (["generate", "--prompt", "hi", "--top-k", "-3"], "argument --top-k: must be at least 0"),
    (["chat", "--temperature", "-1"], "argument --temperature: must lie in [0, inf)"),
    (["serve", "--port", "99999"], "argument --port: a port is at most 65535"),
    (["serve", "--port", "-1"], "argument --port: must be at least 0"),
    (["serve", "--max-batch", "0"], "argument --max-batch: must be at least 1"),
    (["serve", "--max-queue", "-1"], "argument --max-queue: must be at least 0"),
    (["serve", "--max-context", "0"], "argument --max-context: must be at least 1"),
    (["memory", "report", "--max-tokens", "0"], "argument --max-tokens: must be at least 1"),
    (["quantize", "dst", "--format", "nf4", "--block-size", "0"], "argument --block-size: must be at least 1"),
]


@pytest.mark.parametrize("argv,fragment", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_refused_before_anything_loads(capsys, argv, fragment):
    name, rest = argv[0], argv[1:]
    if name == "memory":
        argv = ["memory", "report", "/no/such/model", *rest[1:]]
    else:
        argv = [name, "/no/such/model", *rest]  # never loaded: the option is refused first
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and "/no/such/model" not in err


def test_launch_refuses_zero_ranks(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["launch", "-n", "0", "train.py"])
    assert exit_info.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_launch_refuses_a_rank_count_past_the_machine_and_a_missing_script(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("pass\n")
    assert main(["launch", "-n", "99999", str(script)]) == 1  # before mpirun starts forking
    _one_line_error(capsys, "ranks for each of this machine's")
    assert main(["launch", "-n", "2", str(tmp_path / "missing.py")]) == 1
    _one_line_error(capsys, "missing.py: no such script")


def test_launch_stops_the_whole_rank_group_when_interrupted(tmp_path):
    from tensora.cli.launch import run_group

    pid_file = tmp_path / "child.pid"
    code = (f"import os, subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; "
            f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(60)")
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGTERM))  # as `kill` of tensora launch
    timer.start()
    try:
        assert run_group([sys.executable, "-c", code], dict(os.environ)) == 130
    finally:
        timer.cancel()
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)  # the grandchild (a rank under mpirun) went with the group


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_generate_refuses_an_empty_prompt_in_one_line(tiny, capsys):
    assert main(["generate", str(tiny), "--prompt", ""]) == 1
    _one_line_error(capsys, "--prompt is empty")


def test_generate_with_an_empty_chat_message_still_answers(tiny, capsys):
    assert main(["generate", str(tiny), "--prompt", "", "--chat", "--max-tokens", "2", "--temperature", "0"]) == 0
    assert "2 tokens" in capsys.readouterr().out


def test_generate_takes_the_prompt_after_the_model_as_the_issue_spells_it(tiny, capsys):
    common = ["--max-tokens", "3", "--temperature", "0"]
    assert main(["generate", str(tiny), "Hello there", *common]) == 0
    positional = capsys.readouterr().out
    assert main(["generate", str(tiny), "--prompt", "Hello there", *common]) == 0
    flag = capsys.readouterr().out
    assert flag.split("[")[0] == positional.split("[")[0] and "3 tokens" in positional  # the same text


@pytest.mark.parametrize("argv, fragment", [
    (["generate", "a.gguf"], "no prompt"),  # a lone .gguf is the model, even when missing
    (["generate"], "no prompt"),
    (["generate", "m.gguf", "one", "--prompt", "two"], "prompt is given twice"),
])
def test_generate_says_what_is_missing_about_the_prompt(argv, fragment, capsys):
    assert main(argv) == 1
    _one_line_error(capsys, fragment)


def test_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--prompt", "hi"]) == 1
    _one_line_error(capsys, "config.json")


@pytest.mark.parametrize("header", [b"GGUF", b"GGUF" + struct.pack("<IQQ", 3, 10 ** 12, 10 ** 12) + bytes(64),
                                    b"GGUF" + struct.pack("<IQQ", 99, 0, 0), b"GGUF" + struct.pack("<IQQ", 3, 0, 0)],
                         ids=["truncated", "absurd-counts", "version-99", "no-architecture"])
def test_a_corrupt_gguf(tmp_path, capsys, header):
    path = tmp_path / "bad.gguf"
    path.write_bytes(header)
    assert main(["generate", str(path), "--prompt", "hi"]) == 1
    _one_line_error(capsys, "bad.gguf")


def test_quantize_a_missing_source_says_it_is_missing(tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "nope"), str(tmp_path / "out"), "--format", "nf4"]) == 1
    err = _one_line_error(capsys, "no such file or directory")
    assert "GGUF" not in err  # it used to say "a GGUF source converts to a .gguf destination"


def test_quantize_a_bad_format_name(tiny, tmp_path, capsys):
    assert main(["quantize", str(tiny), str(tmp_path / "out"), "--format", "nf5"]) == 1
    _one_line_error(capsys, "unknown quantization format 'nf5'", "nf4")


def test_memory_report_with_a_bad_budget(tiny, capsys):
    assert main(["memory", "report", str(tiny), "--memory-budget", "12 XB"]) == 1
    _one_line_error(capsys, "'12 XB'", "MiB")


def test_serve_on_a_busy_port_fails_at_once_in_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # the model path does not exist: the port is checked first, so the error is about the port
        assert main(["serve", "/no/such/model", "--port", str(port)]) == 1
    _one_line_error(capsys, f"cannot listen on 127.0.0.1:{port}")


def test_serve_on_an_unknown_host(capsys):
    assert main(["serve", "/no/such/model", "--host", "no-such-host.invalid", "--port", "0"]) == 1
    _one_line_error(capsys, "cannot listen on no-such-host.invalid:0")


def test_debug_after_the_command_name_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["generate", str(tmp_path / "missing.gguf"), "--prompt", "hi", "--debug"])
    with pytest.raises(FileNotFoundError):
        main(["--debug", "generate", str(tmp_path / "missing.gguf"), "--prompt", "hi"])


def test_a_reader_that_goes_away_ends_generate_quietly(tiny):
    """`tensora generate ... | head -c 5`: the pipe closes mid-stream; the command stops with
    no error line (it printed `BrokenPipeError: [Errno 32]` before)."""
    import subprocess
    import sys

    code = ("import sys; sys.argv[0] = 'tensora'; from tensora.cli import main; "
            f"sys.exit(main(['generate', {str(tiny)!r}, '--prompt', 'hello', '--max-tokens', '200', "
            "'--temperature', '0']))")
    gen = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    gen.stdout.read(5)
    gen.stdout.close()  # as head does after its 5 bytes
    err = gen.stderr.read().decode()
    assert gen.wait(timeout=120) in (0, 1) and err == "", err

# -- when something fails midway: nothing half-written, the session kept, the real port ------------------
# quantize checks its destination before converting anything, writes a directory whole or not at all,
# and names the destination (not a scratch file beside it) when writing fails; chat reports a failed
# turn in one line, drops that message and goes on; serve --port 0 prints the port it is given; a GGUF
# whose token list is shorter than its embedding is refused, not generated as empty text.


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
