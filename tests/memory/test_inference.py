"""Proof: a Llama-style model 16x bigger (float32) than its host budget generates, quantized and tiered,
exactly as the unconstrained quantized model does, and its peak RSS, read from outside the
tensora calls in a child process (VmHWM), stays within budget + a fixed overhead.

The fixed overhead is measured, not guessed: BASELINE is the same child program run on a
1-layer version of the model without a budget (interpreter, numpy, tensora and every
module that loading and generation import, the tokenizer-less model object, the KV
cache). MARGIN (6 MiB) covers what grows with the number of layers or the budget but is
not a weight: 40 layers of Python module objects and placeholders (~1 MiB), the
quantizer's float32 temporaries for the largest source tensor while loading (704x256
float32 = 0.7 MiB, a few copies), page rounding of the mapped buffers (1%), and the
prefetch thread's stack and malloc arena (~2 MiB touched). The unconstrained run is
checked to exceed budget + overhead, so the bound is one the test could fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import write_llama

MIB = 2**20
MARGIN = 6 * MIB
PROMPT = [1, 5, 9, 20, 33]

CHILD = r"""
import json, sys
from tensora.models import load
budget = None if sys.argv[2] == "none" else int(sys.argv[2])
model = load(sys.argv[1], quantize="q4_0", memory_budget=budget, disk_dir=sys.argv[3])
out = model.generate(PROMPT, max_new_tokens=12, temperature=0)
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
report = None
if budget is not None:
    t = model.memory.manager.tracker
    report = {"host_peak": t.peak["host"], "moved": t.moved["disk->host"], "spill_peak": t.peak["spill"]}
print(json.dumps({"tokens": out.token_ids, "peak": peak, "report": report}))
""".replace("PROMPT", repr(PROMPT))


def _run(model_dir, budget, tmp_path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), str(budget), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_generation_under_a_sixteenth_of_the_float32_size(tmp_path):
    fp32 = write_llama(tmp_path / "big", layers=40)  # 115 MiB of float32 weights, 16.7 MiB as q4_0
    write_llama(tmp_path / "one", layers=1)
    budget = fp32 // 16
    spill = tmp_path / "spill"
    baseline = _run(tmp_path / "one", "none", spill)["peak"]
    free = _run(tmp_path / "big", "none", spill)
    tiered = _run(tmp_path / "big", budget, spill)

    assert tiered["tokens"] == free["tokens"] and len(tiered["tokens"]) == 12
    r = tiered["report"]
    assert r["host_peak"] <= budget
    assert r["moved"] > 2 * fp32 / 16  # the layers really streamed through, more than once
    limit = baseline + budget + MARGIN
    print(f"\nfloat32 {fp32 / MIB:.1f} MiB, budget {budget / MIB:.1f} MiB, baseline {baseline / MIB:.1f} MiB, "
          f"tiered peak {tiered['peak'] / MIB:.1f} MiB (limit {limit / MIB:.1f}), "
          f"unconstrained peak {free['peak'] / MIB:.1f} MiB")
    assert tiered["peak"] <= limit
    assert free["peak"] > limit  # the same bound fails without tiering: the test can fail
    assert not list(spill.glob("tensora-spill-*"))  # the children removed their spill directories
