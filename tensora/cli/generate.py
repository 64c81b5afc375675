"""`tensora generate`: stream a completion or a chat reply from a model to the terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import activation_bits_arg, apply_activation_bits, command, int_at_least, sampling_args
from .streaming import stream_to_terminal


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="HF directory or .gguf file (default: the embedded SmolLM2-135M)")
    p.add_argument("text", nargs="?", metavar="prompt", help="the prompt (or give it with --prompt)")
    p.add_argument("--prompt", default=None, help="the text to continue, or the user message with --chat")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    sampling_args(p, max_tokens=128, temperature=0.7, top_p=0.95)
    p.add_argument("--top-k", type=int_at_least(0), default=0, help="sample from the k likeliest tokens (0: all)")
    p.add_argument("--quantize", default=None, help="quantize while loading: nf4, q4_0, int8, ...")
    activation_bits_arg(p)


@command("generate", "stream a completion (or a chat reply) from a model", _generate_args)
def generate(args: argparse.Namespace) -> int:
    from tensora.models import DefaultModelMissing, default_model_path, load

    _resolve_prompt(args)
    if not args.prompt and not args.chat:
        raise ValueError("--prompt is empty: give the text to continue (or a message with --chat)")
    try:
        path = args.model or default_model_path()
    except DefaultModelMissing as exc:
        print(f"tensora generate: {exc}", file=sys.stderr)
        return 2
    apply_activation_bits(args)
    model = load(path, quantize=args.quantize)
    prompt = model.chat_prompt([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    stream_to_terminal(model, prompt, max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
            top_k=args.top_k, seed=args.seed)
    return 0


def _resolve_prompt(args: argparse.Namespace) -> None:
    """`generate MODEL "prompt"`, `generate "prompt"` (the default model) and `--prompt` all work: a lone
    positional is the model when it names a file or folder (or a .gguf), else the prompt."""
    if args.text is not None:
        if args.prompt is not None:
            raise ValueError(f"the prompt is given twice ({args.text!r} and --prompt {args.prompt!r}); give one")
        args.prompt = args.text
    elif args.prompt is None and args.model is not None and not _names_a_model(args.model):
        args.model, args.prompt = None, args.model
    if args.prompt is None:
        raise ValueError("no prompt: give it after the model (tensora generate MODEL \"text\") or with --prompt")


def _names_a_model(arg: str) -> bool:
    return Path(arg).exists() or arg.endswith(".gguf")
