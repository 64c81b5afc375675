"""`tensora bench [NAME ...]`: run the benchmark scripts of a source checkout and show their ratio tables.

The benchmarks are scripts in the repository's benchmarks/ folder (they compare with
NumPy, PyTorch, transformers, llama.cpp and accelerate, which the package itself never
imports), so this command finds that folder: --dir, else ./benchmarks, else the one
beside an editable install's package.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

from . import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", help="benchmarks to run (e.g. ops quant_matmul generate); default: all")
    p.add_argument("--dir", type=Path, default=None, help="the benchmarks folder (default: ./benchmarks)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")


def benchmarks_dir(given: Path | None) -> Path:
    import tensora

    candidates = [given] if given is not None else [Path.cwd() / "benchmarks",
                                                    Path(tensora.__file__).resolve().parents[1] / "benchmarks"]
    for d in candidates:
        if d is not None and d.is_dir() and any(d.glob("*.py")):
            return d
    raise FileNotFoundError(f"no benchmarks folder at {', '.join(str(d) for d in candidates)}: run from a source "
                            "checkout of tensora or pass --dir")


@command("bench", "run the benchmarks (vs NumPy, PyTorch, llama.cpp, ...) and print their ratio tables", _args)
def bench(args: argparse.Namespace) -> int:
    folder = benchmarks_dir(args.dir)
    available = {p.stem: p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")}
    if args.list:
        for name, path in available.items():
            print(f"{name:<18} {_summary(path)}")
        return 0
    unknown = [n for n in args.names if n not in available]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")
    failed = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(folder.parent), os.environ.get("PYTHONPATH")])))
    for name in args.names or list(available):
        print(f"\n== {name} " + "=" * max(0, 60 - len(name)), flush=True)
        if subprocess.run([sys.executable, str(available[name])], env=env).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _summary(path: Path) -> str:
    """The first line of the script's docstring; "(unreadable: why)" for one that does not parse, so that
    one broken file does not hide the whole list."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        return f"(unreadable: {type(exc).__name__})"
    return doc.strip().splitlines()[0] if doc.strip() else ""
