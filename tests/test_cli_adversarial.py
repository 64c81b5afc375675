"""The `tensora` command against careless input: one clear line and a non-zero exit, no traceback.

Bad option values are refused while the arguments are parsed (exit 2, argparse's usage and
one error line naming the option), before a model is loaded; a failure of the command
itself is one line and exit 1, with the traceback only under --debug (before or after the
command's name).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import threading
import time

import pytest
from serve.tiny import write_tiny_llama

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
