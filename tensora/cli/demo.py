"""`tensora demo`: a tour of tensors, views, dtypes, autograd, quantization and a real model."""

from __future__ import annotations

import argparse
import time

from . import command
from .streaming import stream_to_terminal


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 60 - len(title)))


@command("demo", "a tour: tensors, views, dtypes, autograd, quantization and a real model answering a chat")
def demo(args: argparse.Namespace) -> int:
    import numpy as np

    import tensora

    ok, why = tensora.native_available()
    print(f"tensora {tensora.__version__}  native extension: {'on' if ok else 'off'} ({why})")

    _section("Tensors and zero-copy views")
    x = tensora.arange(12, dtype=tensora.float32).reshape(3, 4)
    print("x =", x)
    v = x.T[1:3]
    print("v = x.T[1:3] ->", tuple(v.shape), "strides", v.stride(), "offset", v.storage_offset(),
          "contiguous:", v.is_contiguous())
    v[0, 0] = -1.0
    print("after v[0, 0] = -1, x[0, 1] =", x[0, 1].item(), "(the write went through the view)")

    _section("dtypes and promotion (PyTorch rules)")
    i8 = tensora.ones(2, dtype=tensora.int8)
    print("int8 + 2.5        ->", (i8 + 2.5).dtype)
    print("float16 + bfloat16 ->", (tensora.ones(1, dtype=tensora.float16) + tensora.ones(1, dtype=tensora.bfloat16)).dtype)
    w = tensora.tensor([1.0, 1.00390625, 3.14159265])
    print("float32 -> bfloat16 (round to nearest even):", w.bfloat16())

    _section("Autograd")
    a = tensora.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = (a * a * a).sum()
    (g,) = tensora.autograd.grad(y, a, create_graph=True)
    g.sum().backward()
    print("y = sum(a^3);  dy/da =", g.detach(), " d2y/da2 =", a.grad)

    _section("Seeded randomness")
    tensora.manual_seed(0)
    r1 = tensora.randn(3)
    tensora.manual_seed(0)
    print("manual_seed(0) twice gives the same draws:", np.array_equal(r1.numpy(), tensora.randn(3).numpy()))

    _section("Speed: a 512x512 float32 matmul")
    m = tensora.randn(512, 512)
    t0 = time.perf_counter()
    for _ in range(10):
        m @ m
    print(f"{(time.perf_counter() - t0) / 10 * 1e3:.2f} ms per matmul")

    _section("Quantized tensors: an MLP in NF4 with double quantization")
    from tensora.quant import memory_report, quantize

    mlp = tensora.nn.Sequential(tensora.nn.Linear(1024, 4096), tensora.nn.GELU(), tensora.nn.Linear(4096, 1024))
    x = tensora.randn(4, 1024)
    dense_out = mlp(x).detach().numpy()
    quantize(mlp, "nf4", double_quant=True)
    err = np.linalg.norm(mlp(x).detach().numpy() - dense_out) / np.linalg.norm(dense_out)
    report = memory_report(mlp)
    print(f"{report.dense_bytes / 2**20:.2f} MiB float32 -> {report.held_bytes / 2**20:.2f} MiB "
          f"({report.multiplier:.1f}x less); relative RMS error of the output {err:.1%}")

    _section("Memory multiplication: a model 12x its memory budget")
    from tensora.memory import format_size, report
    from tensora.models import DefaultModelMissing, default_model_path, load

    try:
        path = default_model_path()
    except DefaultModelMissing as exc:
        print(f"skipped: {exc}")
        return 0
    budget = "40MiB"
    t0 = time.perf_counter()
    model = load(path, memory_budget=budget, progress=True)  # 4-bit as stored, tiered: host RAM -> disk
    tracker = model.memory.manager.tracker
    print(f"loaded {path.name} in {time.perf_counter() - t0:.2f} s: {format_size(tracker.full_precision_bytes)} "
          f"as float32, {format_size(path.stat().st_size)} as stored (Q4_1/Q8_0), run layer by layer with "
          f"prefetch inside a {budget} host budget")
    question = "What is the capital of France?"
    print(f"user: {question}\nassistant: ", end="", flush=True)
    stream_to_terminal(model, model.chat_prompt([{"role": "user", "content": question}]), max_new_tokens=48,
                       temperature=0)
    print(report(model.memory.manager))
    model.memory.close()

    _section("QLoRA: training adapters on the frozen 4-bit model")
    _train_lora(load(path))
    return 0


def _train_lora(model: object, steps: int = 3) -> None:
    """A few AdamW steps on rank-8 adapters of the attention projections; the 4-bit base stays frozen."""
    import numpy as np

    import tensora
    from tensora.nn import add_lora
    from tensora.nn import functional as F
    from tensora.quant import memory_report

    base_values = memory_report(model).dense_bytes // 4  # every weight, quantized or not, as float32 values
    replaced = add_lora(model, r=8, alpha=16, targets=["q_proj", "v_proj"])
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"{len(replaced)} layers get adapters: {sum(p.numel() for p in params):,} trainable values beside "
          f"the base's {base_values:,} frozen ones (kept in their 4/8-bit formats)")
    ids = np.array([model.tokenizer.encode("Tensora runs models several times larger than the memory you have.")])
    targets = tensora.tensor(ids[:, 1:].reshape(-1))
    opt = tensora.optim.AdamW(params, lr=2e-3)
    model.train()
    for step in range(steps):
        t0 = time.perf_counter()
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step + 1}: loss {loss.item():.3f} ({time.perf_counter() - t0:.2f} s)")
    model.eval()
