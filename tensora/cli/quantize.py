"""`tensora quantize SRC DST --format F`: write a model's weights quantized (see tensora.models.convert)."""

from __future__ import annotations

import argparse

from pathlib import Path

from . import command, int_at_least


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a Hugging Face model directory or a .gguf file")
    p.add_argument("dst", help="a directory (safetensors + config.json + tokenizer files, any format) or a "
                               ".gguf file (as llama.cpp's converter writes it; a GGUF block format or f32/f16/bf16)")
    p.add_argument("--format", required=True, help="nf4, int8, fp8_e4m3, q4_0, q4_k, q8_0, ... "
                                                    "(tensora.quant.formats()), or f32 / f16 / bf16 to "
                                                    "write the weights dense")
    p.add_argument("--block-size", type=int_at_least(1), default=None,
                   help="block/group size, for formats that take one")
    p.add_argument("--double-quant", action="store_true", help="nf4/fp4: quantize the block scales too")


@command("quantize", "write a model quantized: a HF directory or GGUF in, a safetensors directory or GGUF out",
         _args)
def quantize(args: argparse.Namespace) -> int:
    import time

    from tensora.models.convert import quantize_checkpoint

    if not Path(args.src).exists():
        raise FileNotFoundError(f"{args.src}: no such file or directory")
    options = {}
    if args.block_size is not None:
        options["block_size"] = args.block_size
    if args.double_quant:
        options["double_quant"] = True
    t0 = time.perf_counter()
    out = quantize_checkpoint(args.src, args.dst, args.format, **options)
    print(f"wrote {out} ({_size(out) / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    return 0


def _size(path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
