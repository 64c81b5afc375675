"""`tensora chat`: an interactive conversation with a model in the terminal, replies streamed."""

from __future__ import annotations

import argparse

from . import activation_bits_arg, apply_activation_bits, command, sampling_args
from .serve import load_model
from .streaming import stream_to_terminal

HELP = "commands: /reset starts over, /exit (or Ctrl-D) quits"


def _chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="HF directory or .gguf file (default: the embedded SmolLM2-135M)")
    p.add_argument("--system", default=None, help="a system prompt to start the conversation with")
    sampling_args(p, max_tokens=256, temperature=0.7, top_p=0.95)
    p.add_argument("--quantize", default=None, help="quantize while loading: nf4, q4_0, int8, ...")
    activation_bits_arg(p)


@command("chat", "chat with a model in the terminal (the conversation is kept)", _chat_args)
def chat(args: argparse.Namespace) -> int:
    apply_activation_bits(args)
    model = load_model(args.model, args.quantize)
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    print(HELP)
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if text == "/exit":
            return 0
        if text == "/reset":
            messages = list(start)
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        reply = stream_to_terminal(model, model.chat_prompt(messages), max_new_tokens=args.max_tokens,
                                   temperature=args.temperature, top_p=args.top_p, seed=args.seed)
        messages.append({"role": "assistant", "content": reply})
