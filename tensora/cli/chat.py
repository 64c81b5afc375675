"""`tensora chat`: an interactive conversation with a model in the terminal, replies streamed."""

from __future__ import annotations

import argparse
import sys

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
    _check_can_chat(model)
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
        reply = _answer(model, messages, args)
        if reply is None:
            messages.pop()  # the conversation goes on as if this message had not been sent
        else:
            messages.append({"role": "assistant", "content": reply})


def _answer(model: object, messages: list[dict[str, str]], args: argparse.Namespace) -> str | None:
    """Stream the reply to `messages`; None when the turn failed (a prompt past the context, text the tokenizer
    refuses): that is one error line, and the session goes on, since one bad message should not lose the
    whole conversation. With --debug the error propagates, traceback and all."""
    print("assistant> ", end="", flush=True)
    try:
        return stream_to_terminal(model, model.chat_prompt(messages), max_new_tokens=args.max_tokens,
                                  temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    except Exception as exc:
        if args.debug or isinstance(exc, BrokenPipeError):  # no terminal to chat in any more
            raise
        print(flush=True)  # ends the "assistant> " line
        print(f"tensora chat: {type(exc).__name__}: {exc} (message dropped; /reset starts over)",
              file=sys.stderr, flush=True)
        return None


def _check_can_chat(model: object) -> None:
    """Fail before the first prompt if no turn could ever succeed (no tokenizer or no chat template), since a
    failed turn does not end the session: it is reported and dropped, and the conversation goes on."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("chat needs a model loaded with its tokenizer (and its chat template)")
    if not tokenizer.chat_template:
        raise ValueError("this model's tokenizer has no chat template, so it cannot chat; "
                         "use `tensora generate` to continue text")
