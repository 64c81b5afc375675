"""Per-call overhead of creation and view ops: tensora vs NumPy vs PyTorch (if installed).

Run: python benchmarks/creation_views.py
Prints microseconds per call and the ratios tensora/numpy and tensora/torch
(lower is better; a view op is pure metadata, so this is Python overhead).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import per_call_us, table  # noqa: E402

import tensora  # noqa: E402

try:
    import torch
    torch.set_num_threads(1)
except ImportError:
    torch = None


def cases():
    xa = np.zeros((64, 64), np.float32)
    xt = tensora.zeros(64, 64)
    xp = torch.zeros(64, 64) if torch else None
    data = [[1.0] * 16] * 16
    return [
        ("zeros(64,64)", lambda: tensora.zeros(64, 64), lambda: np.zeros((64, 64), np.float32),
         torch and (lambda: torch.zeros(64, 64))),
        ("arange(1000)", lambda: tensora.arange(1000), lambda: np.arange(1000), torch and (lambda: torch.arange(1000))),
        ("randn(64,64)", lambda: tensora.randn(64, 64), lambda: np.random.standard_normal((64, 64)).astype(np.float32),
         torch and (lambda: torch.randn(64, 64))),
        ("tensor(list 16x16)", lambda: tensora.tensor(data), lambda: np.array(data, np.float32),
         torch and (lambda: torch.tensor(data))),
        ("from_numpy", lambda: tensora.from_numpy(xa), lambda: np.asarray(xa), torch and (lambda: torch.from_numpy(xa))),
        ("reshape", lambda: xt.reshape(16, 256), lambda: xa.reshape(16, 256), torch and (lambda: xp.reshape(16, 256))),
        ("view", lambda: xt.view(-1), lambda: xa.reshape(-1), torch and (lambda: xp.view(-1))),
        ("transpose", lambda: xt.transpose(0, 1), lambda: xa.swapaxes(0, 1), torch and (lambda: xp.transpose(0, 1))),
        ("permute", lambda: xt.permute(1, 0), lambda: xa.transpose(1, 0), torch and (lambda: xp.permute(1, 0))),
        (".T", lambda: xt.T, lambda: xa.T, torch and (lambda: xp.mT)),
        ("slice [2:10, ::2]", lambda: xt[2:10, ::2], lambda: xa[2:10, ::2], torch and (lambda: xp[2:10, ::2])),
        ("int index [3]", lambda: xt[3], lambda: xa[3], torch and (lambda: xp[3])),
        ("unsqueeze(0)", lambda: xt.unsqueeze(0), lambda: xa[None], torch and (lambda: xp.unsqueeze(0))),
        ("expand", lambda: xt[None].expand(4, 64, 64), lambda: np.broadcast_to(xa[None], (4, 64, 64)),
         torch and (lambda: xp[None].expand(4, 64, 64))),
        ("narrow", lambda: xt.narrow(1, 8, 16), lambda: xa[:, 8:24], torch and (lambda: xp.narrow(1, 8, 16))),
    ]


def main() -> None:
    rows = []
    for name, ft, fn, fp in cases():
        t, n = per_call_us(ft), per_call_us(fn)
        p = per_call_us(fp) if fp else None
        rows.append((name, t, n, p, t / n, (t / p) if p else None))
    print(table(rows, ("op", "tensora us", "numpy us", "torch us", "x numpy", "x torch")))
    ratios = [r[5] for r in rows if r[5]]
    if ratios:
        print(f"\ngeometric mean tensora/torch: {np.exp(np.mean(np.log(ratios))):.2f}x")


if __name__ == "__main__":
    main()
