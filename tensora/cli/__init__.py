"""The `tensora` command line.

Each subcommand lives in its own module in this package and registers itself with
``@command(name, help, setup)``; ``main`` imports every module here (so adding a
command is adding a file) and builds one argparse parser from the registry.
Command modules import heavy dependencies inside their functions, so that
``tensora --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import pkgutil
import sys
import warnings
from typing import Any, Callable

Handler = Callable[[argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], None]

COMMANDS: dict[str, tuple[Handler, Setup, str]] = {}


def command(name: str, help: str, setup: Setup = lambda p: None) -> Callable[[Handler], Handler]:
    """Register ``fn(args) -> exit code`` as ``tensora NAME``, with ``setup`` adding its arguments."""
    def deco(fn: Handler) -> Handler:
        COMMANDS[name] = (fn, setup, help)
        return fn
    return deco


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low, refused with a message naming the bound."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def float_between(low: float, high: float | None = None, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] (or (low, high] with low_open)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):  # nan, inf: no sampling
            bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
            raise argparse.ArgumentTypeError(f"must lie in {bounds}, got {text}")
        return value
    return parse


def sampling_args(p: argparse.ArgumentParser, max_tokens: int, temperature: float, top_p: float) -> None:
    """The sampling options of generate and chat, checked when parsed (not after the model has loaded)."""
    p.add_argument("--max-tokens", type=int_at_least(1), default=max_tokens, help="tokens to generate at most")
    p.add_argument("--temperature", type=float_between(0.0), default=temperature, help="0: greedy")
    p.add_argument("--top-p", type=float_between(0.0, 1.0, low_open=True), default=top_p)
    p.add_argument("--seed", type=int_at_least(0), default=None)


def activation_bits_arg(p: argparse.ArgumentParser) -> None:
    """--activation-bits: how quantized weights' products round activations (tensora.quant.set_activation_bits)."""
    p.add_argument("--activation-bits", type=int, choices=(15, 8), default=15,
                   help="8: llama.cpp's 8-bit activations with quantized weights (faster, coarser)")


def apply_activation_bits(args: argparse.Namespace) -> None:
    from tensora.quant import set_activation_bits

    set_activation_bits(args.activation_bits)


def _load_commands() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def _one_line_warning(command: str) -> Callable[..., None]:
    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"tensora {command}: warning: {message}", file=sys.stderr)
    return show


def main(argv: list[str] | None = None) -> int:
    _load_commands()
    parser = argparse.ArgumentParser(prog="tensora", description="Tensora command line")
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, setup, help_text) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        setup(p)
        # also after the command's name (`tensora serve m --debug`); absent there, the top level's value stands
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback when the command fails")
        p.set_defaults(_fn=fn)
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not args.debug:  # a warning is one line too (where it was raised: with --debug)
                warnings.showwarning = _one_line_warning(args.command)
            return args._fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`tensora generate ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush fails no more
        return 1
    except Exception as exc:  # one clear line for users; the traceback with --debug
        if args.debug:
            raise
        print(f"tensora {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
