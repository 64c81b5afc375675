"""`tensora memory report MODEL`: load a model under a host budget, generate a little, print the memory report."""

from __future__ import annotations

import argparse

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

    path = args.model or default_model_path()
    model = load(path, quantize=args.quantize, memory_budget=args.memory_budget, disk_dir=args.disk_dir)
    prompt = args.prompt if model.tokenizer is not None else [1]
    out = model.generate(prompt, max_new_tokens=args.max_tokens, temperature=0)
    print(f"generated {out.completion_tokens} tokens: {out.text if model.tokenizer is not None else out.token_ids}")
    print(report(model.memory.manager))
    if args.plot:
        plot_usage(args.plot, model.memory.manager.tracker)
        print(f"tier usage plotted to {args.plot}")
    return 0
