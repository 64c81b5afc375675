"""Building blocks the architectures share: checkpoint-filled layers, rotary embeddings, KV cache.

Model layers here are always overwritten by a checkpoint right after construction, so
`CheckpointLinear` / `CheckpointEmbedding` skip the random initialisation: their
parameters stay untouched `empty` arrays (virtual memory, no resident pages) until the
loader assigns the real weights, which is what keeps loading a large model (and
quantizing it on the way in) from first filling RAM with random float32 numbers.
They are plain nn.Linear / nn.Embedding otherwise, so `tensora.quant.quantize` and
LoRA adapters treat them as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..creation import zeros
from ..nn import Embedding, Linear
from ..ops.rotary import rotary_embedding
from ..tensor import Tensor


class CheckpointLinear(Linear):
    """nn.Linear whose weights come from a checkpoint: no random init (see module docstring)."""

    def reset_parameters(self) -> None:
        pass


class CheckpointEmbedding(Embedding):
    """nn.Embedding whose table comes from a checkpoint: no random init (see module docstring)."""

    def reset_parameters(self) -> None:
        pass


# -- rotary position embeddings ----------------------------------------------------------------

def rope_inverse_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> np.ndarray:
    """inv_freq[i] = theta^(-2i/d), adjusted as `rope_scaling` asks (transformers' rope init functions).

    Supported: none/"default", "linear" (positions divided by factor), "llama3" (Llama 3.1's
    frequency-dependent smoothing between low_freq_factor and high_freq_factor wavelengths);
    "freq_factors" (a GGUF's rope_freqs tensor, one divisor per frequency) applies on top.
    """
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaling = scaling or {}
    if not isinstance(scaling, dict):
        raise ValueError(f"rope_scaling must be a mapping of settings, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    needs = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                                               "original_max_position_embeddings")}.get(kind, ())
    missing = [k for k in needs if not isinstance(scaling.get(k), (int, float)) or isinstance(scaling.get(k), bool)]
    if missing:
        raise ValueError(f"rope_scaling {kind!r} needs numbers for {', '.join(missing)}, got {scaling!r}")
    if kind in ("default", None):
        pass
    elif kind == "linear":
        inv = inv / float(scaling["factor"])
    elif kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_context = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old_context / low, inv / factor, inv)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
        inv = np.where(medium, smoothed, scaled)
    else:
        raise ValueError(f"rope_scaling type {kind!r} is not supported (supported: default, linear, llama3)")
    if "freq_factors" in scaling:  # a GGUF's rope_freqs tensor: llama.cpp divides each frequency by its factor
        inv = inv / np.asarray(scaling["freq_factors"], dtype=np.float64)
    return inv


def llama3_scaling_from_factors(factors: Any, head_dim: int, theta: float) -> dict[str, Any] | None:
    """The "llama3" rope_scaling whose frequencies are the plain ones divided by `factors` (a GGUF's
    rope_freqs, which llama.cpp's converter computes from that scaling), or None when no such
    scaling reproduces them to 1e-5 (or fewer than two frequencies are in its smoothed band).

    The band's edges fix only old_context / (high - low) and low / (high - low), so low_freq_factor
    is taken as 1 (Llama 3.1's and 3.2's value) and the others follow.
    """
    f = np.asarray(factors, dtype=np.float64).reshape(-1)
    plain = rope_inverse_frequencies(head_dim, theta, None)
    factor = float(f.max()) if f.size == plain.size else 0.0
    medium = (f > 1 + 1e-6) & (f < factor * (1 - 1e-6))
    if factor <= 1 or medium.sum() < 2:
        return None
    smooth = (1 / f[medium] - 1 / factor) / (1 - 1 / factor)  # s = old_context / wavelen - low, over high - low
    wavelen = 2 * math.pi / plain[medium]
    (a, b), *_ = np.linalg.lstsq(np.stack([1 / wavelen, -np.ones_like(wavelen)], axis=1), smooth, rcond=None)
    if a <= 0 or b <= 0:
        return None
    scaling = {"rope_type": "llama3", "factor": round(factor, 6), "low_freq_factor": 1.0,
               "high_freq_factor": round(float(1 + 1 / b), 6), "original_max_position_embeddings": int(round(float(a / b)))}
    rebuilt = rope_inverse_frequencies(head_dim, theta, scaling)
    return scaling if np.allclose(rebuilt, plain / f, rtol=1e-5, atol=0) else None


class RotaryTable:
    """cos/sin of position * inv_freq for the positions used so far, up to max_positions.

    The rows are computed as positions come (doubling), not for the whole context at once:
    a 10M-position context would otherwise take gigabytes before the first token. Each row
    depends on its position alone, so a row is the same whenever it is computed.

    Uses the "rotate half" layout of transformers' Llama (first half of each head pairs
    with the second half); GGUF's interleaved Q/K rows are put back in this order on load.
    """

    FIRST_ROWS = 4096

    def __init__(self, head_dim: int, max_positions: int, theta: float, scaling: dict[str, Any] | None,
                 dtype: dt.DType = dt.float32) -> None:
        self._inv = rope_inverse_frequencies(head_dim, theta, scaling).astype(np.float32)
        self._dtype = dtype
        self.max_positions = max_positions
        self._compute(min(max_positions, self.FIRST_ROWS))

    def _compute(self, rows: int) -> None:
        # float32 products as transformers computes them (inv_freq @ positions in float32)
        freqs = np.arange(rows, dtype=np.float32)[:, None] * self._inv[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)
        self.cos = Tensor(np.cos(emb).astype(self._dtype.np_dtype))
        self.sin = Tensor(np.sin(emb).astype(self._dtype.np_dtype))

    def covering(self, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        """The (rows, head_dim) cos and sin tables, holding at least every row in `positions`."""
        top = int(positions.max()) + 1 if positions.size else 0
        if top > self.max_positions:
            raise ValueError(f"position {top - 1} is beyond the model's {self.max_positions} rotary positions")
        if top > self.cos.shape[0]:
            self._compute(min(self.max_positions, max(top, 2 * self.cos.shape[0])))
        return self.cos, self.sin

    def lookup(self, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        """(cos, sin) for integer positions of shape (B, T), each (B, 1, T, head_dim) to broadcast over heads."""
        cos, sin = self.covering(positions)
        idx = Tensor(positions.astype(np.int64))
        return cos[idx].unsqueeze(1), sin[idx].unsqueeze(1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x * cos + rotate_half(x) * sin, x of shape (B, heads, T, head_dim): one op (ops/rotary.py)."""
    return rotary_embedding(x, cos, sin)


# -- KV cache ----------------------------------------------------------------------------------

@dataclass
class LayerCache:
    """Preallocated keys and values of one attention layer: (B, kv_heads, capacity, head_dim)."""

    keys: Tensor
    values: Tensor

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v at positions [start, start + T) and return views of everything up to there."""
        stop = start + k.shape[2]
        if stop > self.keys.shape[2]:
            raise ValueError(f"KV cache holds {self.keys.shape[2]} positions; writing up to {stop}")
        self.keys[:, :, start:stop] = k
        self.values[:, :, start:stop] = v
        return self.keys[:, :, :stop], self.values[:, :, :stop]


class KVCache:
    """The keys and values of every layer, allocated once for `capacity` positions of `batch` rows.

    `length` is how many positions are filled; `key_mask` (B, capacity) marks real (non-padding)
    keys, so left-padded batches of prompts of different lengths attend only to their own tokens.
    """

    def __init__(self, layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int,
                 dtype: dt.DType) -> None:
        shape = (batch, kv_heads, capacity, head_dim)
        self.layers = [LayerCache(zeros(*shape, dtype=dtype), zeros(*shape, dtype=dtype)) for _ in range(layers)]
        self.capacity = capacity
        self.length = 0
        self.key_mask = np.zeros((batch, capacity), dtype=bool)

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    @property
    def nbytes(self) -> int:
        return sum(c.keys.nbytes + c.values.nbytes for c in self.layers)


def attention_mask(key_mask: np.ndarray, start: int, steps: int, window: int | None = None) -> Tensor | None:
    """Boolean (B, 1, T, S) mask for queries at positions [start, start + T) over keys [0, S).

    Causal, restricted to real keys (key_mask) and, with a sliding window, to the last
    `window` positions. Each query may always see its own position, so a padding query
    never has an empty row. None when plain causal attention over everything would do.
    """
    total = start + steps
    keys = key_mask[:, :total]
    if steps == 1 and window is None and keys.all():
        return None
    q = np.arange(start, total)[:, None]
    k = np.arange(total)[None, :]
    allowed = k <= q
    if window is not None:
        allowed &= k > q - window
    mask = allowed[None] & keys[:, None, :]
    mask |= (k == q)[None]
    return Tensor(mask[:, None])


class SlotKVCache:
    """KV cache for continuous batching: rows that join and leave, each at its own length.

    Active rows are kept packed in [0, rows): a row that leaves is replaced by the last one,
    so a decode step runs over exactly the live sequences. Rows that join together are
    prefilled together through `rows_view`, each from its own length; a decode step then
    writes each row's new key at that row's own length (`lengths`), and `decode_mask` hides
    every position a row has not filled. Batch and time capacity grow on demand (doubling)
    and shrink back when the last row leaves, so memory follows what is in use, not the
    largest batch times the longest context.
    """

    #: The cache this is a view of (`rows_view`), else None: model-level checks done once per
    #: cache (llama_decode.fast_path) then hold for every view of the same cache.
    owner: Any = None

    def __init__(self, prototype: KVCache, max_positions: int) -> None:
        keys = prototype[0].keys
        _, self.kv_heads, _, self.head_dim = keys.shape
        self.dtype, self.n_layers, self.max_positions = keys.dtype, len(prototype.layers), max_positions
        self.rows = 0
        self.lengths = np.zeros(0, dtype=np.int64)
        self.layers: list[LayerCache] = []
        self._allocate(1, 16)

    @property
    def capacity(self) -> int:
        return self.layers[0].keys.shape[2]

    @property
    def nbytes(self) -> int:
        return sum(c.keys.nbytes + c.values.nbytes for c in self.layers)

    def _allocate(self, batch: int, capacity: int) -> None:
        """Grow to at least (batch, capacity), copying what the live rows hold."""
        shape = (batch, self.kv_heads, capacity, self.head_dim)
        fresh = [LayerCache(zeros(*shape, dtype=self.dtype), zeros(*shape, dtype=self.dtype))
                 for _ in range(self.n_layers)]
        if self.layers and self.rows:
            used = int(self.lengths[:self.rows].max(initial=0))
            for new, old in zip(fresh, self.layers):
                new.keys[:self.rows, :, :used] = old.keys[:self.rows, :, :used]
                new.values[:self.rows, :, :used] = old.values[:self.rows, :, :used]
        lengths = np.zeros(batch, dtype=np.int64)
        lengths[:self.rows] = self.lengths[:self.rows]
        self.layers, self.lengths = fresh, lengths

    def add_row(self, positions: int) -> int:
        """Make room for one more row that will hold `positions` keys; returns its index."""
        if positions > self.max_positions:
            raise ValueError(f"{positions} positions exceed the model's context of {self.max_positions}")
        batch, capacity = self.layers[0].keys.shape[0], self.capacity
        if self.rows == batch or positions > capacity:
            grow = max(capacity, 1)
            while grow < positions:
                grow *= 2
            self._allocate(batch * 2 if self.rows == batch else batch, min(grow, self.max_positions))
        self.lengths[self.rows] = 0
        self.rows += 1
        return self.rows - 1

    def remove_row(self, row: int) -> None:
        """Drop a row; the last row moves into its place (callers re-read row indices)."""
        last = self.rows - 1
        if row != last:
            used = int(self.lengths[last])
            for c in self.layers:
                c.keys[row, :, :used] = c.keys[last, :, :used]
                c.values[row, :, :used] = c.values[last, :, :used]
            self.lengths[row] = used
        self.rows = last
        if last == 0:  # idle: give back what a long or wide burst made it grow to
            self._allocate(1, 16)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Copy the keys and values of positions [0, length) of row `src` into row `dst`."""
        if not (0 <= src < self.rows and 0 <= dst < self.rows and 0 <= length <= self.lengths[src]):
            raise ValueError(f"cannot copy {length} positions from row {src} (length "
                             f"{self.lengths[src] if 0 <= src < self.rows else '-'}) to row {dst} of {self.rows}")
        for c in self.layers:
            c.keys[dst, :, :length] = c.keys[src, :, :length]
            c.values[dst, :, :length] = c.values[src, :, :length]

    def read_prefix(self, row: int, length: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of row `row`'s keys and values at positions [0, length), per layer: (kv_heads, length, D) each."""
        if not (0 <= row < self.rows and 0 <= length <= self.lengths[row]):
            raise ValueError(f"cannot read {length} positions of row {row} of {self.rows}")
        return [(c.keys.numpy()[row, :, :length].copy(), c.values.numpy()[row, :, :length].copy()) for c in self.layers]

    def write_prefix(self, row: int, saved: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Write what read_prefix returned (or a prefix of it) at positions [0, length) of row `row`."""
        length = saved[0][0].shape[1] if saved else 0
        if not (0 <= row < self.rows and len(saved) == self.n_layers and length <= self.capacity):
            raise ValueError(f"cannot write {len(saved)} layers of {length} positions to row {row} of {self.rows}")
        for c, (k, v) in zip(self.layers, saved):
            c.keys.numpy()[row, :, :length] = k
            c.values.numpy()[row, :, :length] = v

    def rows_view(self, first: int, count: int) -> SlotKVCache:
        """Rows [first, first + count) as a SlotKVCache of their own (storage and lengths shared),
        for one forward pass over them: prefilling the prompts that join together."""
        if not (0 <= first and count > 0 and first + count <= self.rows):
            raise ValueError(f"rows {first}..{first + count} are not among the {self.rows} rows")
        view = SlotKVCache.__new__(SlotKVCache)
        view.kv_heads, view.head_dim, view.dtype = self.kv_heads, self.head_dim, self.dtype
        view.n_layers, view.max_positions, view.rows = self.n_layers, self.max_positions, count
        view.lengths = self.lengths[first:first + count]
        view.layers = [LayerCache(c.keys[first:first + count], c.values[first:first + count]) for c in self.layers]
        view.owner = self
        return view

    def decode_mask(self, window: int | None, steps: int = 1) -> Tensor:
        """(rows, 1, steps, S) mask for `steps` new queries per row from its own length over keys
        [0, S): one for a decode step, a right-padded prompt suffix for a joint prefill (a
        padding query sees the keys before it, so its row is never empty)."""
        q = self.lengths[:self.rows, None] + np.arange(steps)[None, :]  # (rows, steps)
        k = np.arange(int(q.max()) + 1)
        allowed = k <= q[:, :, None]
        if window is not None:
            allowed &= k > q[:, :, None] - window
        return Tensor(allowed[:, None])

    def __getitem__(self, i: int) -> _SlotLayer:
        return _SlotLayer(self, self.layers[i])


class _SlotLayer:
    """One layer of a SlotKVCache as a decode step sees it: `update` writes at each row's length."""

    def __init__(self, owner: SlotKVCache, cache: LayerCache) -> None:
        self.owner, self.cache = owner, cache

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v (rows, kv_heads, T, head_dim) go to positions lengths[row] + [0, T); `start` is unused (rows differ)."""
        n, lengths, t = self.owner.rows, self.owner.lengths[:self.owner.rows], k.shape[2]
        rows, at = np.arange(n)[:, None], lengths[:, None] + np.arange(t)[None, :]  # (n, T) each
        self.cache.keys[rows, :, at] = k.transpose(1, 2)  # indexed: (n, T, kv_heads, head_dim)
        self.cache.values[rows, :, at] = v.transpose(1, 2)
        stop = int(lengths.max()) + t
        return self.cache.keys[:n, :, :stop], self.cache.values[:n, :, :stop]
