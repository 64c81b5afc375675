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
import pkgutil
import sys
from typing import Callable

Handler = Callable[[argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], None]

COMMANDS: dict[str, tuple[Handler, Setup, str]] = {}


def command(name: str, help: str, setup: Setup = lambda p: None) -> Callable[[Handler], Handler]:
    """Register ``fn(args) -> exit code`` as ``tensora NAME``, with ``setup`` adding its arguments."""
    def deco(fn: Handler) -> Handler:
        COMMANDS[name] = (fn, setup, help)
        return fn
    return deco


def _load_commands() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def main(argv: list[str] | None = None) -> int:
    _load_commands()
    parser = argparse.ArgumentParser(prog="tensora", description="Tensora command line")
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, setup, help_text) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        setup(p)
        p.set_defaults(_fn=fn)
    args = parser.parse_args(argv)
    try:
        return args._fn(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for users; the traceback with --debug
        if args.debug:
            raise
        print(f"tensora {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
