"""`tensora memory report MODEL`: load a model under a host budget, generate a little, print the memory report."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import command, int_at_least


def _memory_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["report"], help="report: load, generate, print the tier report")
    p.add_argument("model", nargs="?", help="HF directory or .gguf file (default: the embedded SmolLM2-135M)")
    p.add_argument("--memory-budget", default="64MiB", help="host RAM budget for the weights, e.g. 64MiB, 1GB")
    p.add_argument("--quantize", default=None, help="quantize while loading: q4_0, nf4, int8, ...")
    p.add_argument("--disk-dir", default=None, help="where spill files go (default: the temp dir)")
    p.add_argument("--prompt", default="The capital of France is", help="text (or, without a tokenizer, ignored)")
    p.add_argument("--max-tokens", type=int_at_least(1), default=16)
    p.add_argument("--plot", default=None, help="also save tier usage over time to this image (matplotlib)")


@command("memory", "run a model under a memory budget and print the tier report", _memory_args)
def memory(args: argparse.Namespace) -> int:
    from tensora.memory import plot_usage, report
    from tensora.models import default_model_path, load

    plot = _plot_target(args.plot) if args.plot else None  # before minutes of work, not after
    path = args.model or default_model_path()
    model = load(path, quantize=args.quantize, memory_budget=args.memory_budget, disk_dir=args.disk_dir)
    prompt = args.prompt if model.tokenizer is not None else [1]
    out = model.generate(prompt, max_new_tokens=args.max_tokens, temperature=0)
    print(f"generated {out.completion_tokens} tokens: {out.text if model.tokenizer is not None else out.token_ids}")
    print(report(model.memory.manager))
    if plot is not None:
        from tensora.io.atomic import atomic_path

        with atomic_path(plot) as tmp:
            plot_usage(tmp, model.memory.manager.tracker, format=plot.suffix[1:].lower())
        print(f"tier usage plotted to {plot}")
    return 0


def _plot_target(name: str) -> Path:
    """`name` as the image to write: its folder exists, it is not a folder, and its suffix is a format
    matplotlib writes (matplotlib would append .png to a name without one, and print none of it)."""
    from matplotlib.figure import Figure

    path = Path(name)
    kinds = Figure().canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in kinds:
        raise ValueError(f"--plot {name}: name an image file ending in one of {', '.join('.' + k for k in kinds)}")
    if path.is_dir() or not path.absolute().parent.is_dir():
        raise ValueError(f"--plot {name}: {'is a directory' if path.is_dir() else 'its folder does not exist'}")
    return path
