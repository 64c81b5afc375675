"""Autoregressive generation with a preallocated KV cache: sampling, stop rules, batching, streaming.

One loop serves every entry point. Prompts of different lengths are left-padded into
one batch; the cache's key mask hides the padding and positions count real tokens only,
so each row computes exactly what it would alone. After the prompt (prefill) each step
feeds one token per row and computes logits for that position only.

batching.BatchDecoder is the step-level form for serving (continuous batching): prompts
join and leave between decode steps, each row at its own cache position; it shares this
module's rows, sampler and stop rules.

Sampling follows transformers' logits processors, in their order: repetition penalty,
temperature, top-k, top-p, min-p; temperature 0 is greedy (argmax). A seed makes a
run reproducible: every row of a batch samples from its own generator seeded with it, so
a prompt gives the same tokens alone or in any batch (as in BatchDecoder).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from ..autograd.grad_mode import no_grad
from ..memory.layered import TieredModel
from .layers import attention_mask
from .tokenizer import StreamDecoder


@dataclass
class Completion:
    """One generated continuation: its text, its token ids and why it ended ("stop" or "length")."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class SamplingOptions:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    stop_token_ids: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.stop is None or isinstance(self.stop, str):
            self.stop = () if self.stop is None else (self.stop,)
        if any(not isinstance(s, str) for s in self.stop):
            raise ValueError(f"stop must be a string or a list of strings, got {self.stop!r}")
        self.stop = tuple(s for s in self.stop if s)  # an empty stop string matches nothing, as in vLLM
        if isinstance(self.stop_token_ids, (int, np.integer)):
            self.stop_token_ids = (int(self.stop_token_ids),)
        integral = isinstance(self.max_new_tokens, (int, np.integer)) and not isinstance(self.max_new_tokens, bool)
        checks = [(integral, "max_new_tokens must be an integer"),
                  (self.max_new_tokens >= 0, "max_new_tokens must be >= 0"),
                  (math.isfinite(self.temperature) and self.temperature >= 0,
                   "temperature must be a finite number >= 0"),
                  (self.top_k >= 0, "top_k must be >= 0"), (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
                  (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
                  (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0,
                   "repetition_penalty must be a finite number > 0")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}, got {self}")


def generate(model: Any, prompt: Any, **options: Any) -> Completion | list[Completion]:
    """Complete a prompt (text or token ids) or a batch of them; a list in gives a list out.

    Options: max_new_tokens, temperature (0 = greedy), top_k, top_p, min_p,
    repetition_penalty, stop (strings), seed, stop_token_ids (default: the tokenizer's eos ids).
    """
    prompts, batched = _prompts(model, prompt)
    run = _Run(model, prompts, SamplingOptions(**options))
    memory = getattr(model, "memory", None)
    with memory.streaming() if isinstance(memory, TieredModel) else contextlib.nullcontext():
        for _ in run.steps():
            pass
    return run.completions() if batched else run.completions()[0]


def stream(model: Any, prompt: Any, **options: Any) -> TextStream:
    """Iterate over text deltas of one prompt's completion; `.completion` holds the result at the end."""
    prompts, batched = _prompts(model, prompt)
    if batched:
        raise ValueError("stream() takes one prompt; use generate() for a batch")
    if model.tokenizer is None:
        raise ValueError("stream() yields text, so it needs a model loaded with its tokenizer; "
                         "generate() gives the token ids of a model without one")
    return TextStream(_Run(model, prompts, SamplingOptions(**options)))


class TextStream:
    """Text deltas of one completion. Never splits a UTF-8 character, never shows a stop string."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        row = self._run.rows[0]
        for _ in self._run.steps():
            delta = row.pending_text(final=False)
            if delta:
                yield delta
        delta = row.pending_text(final=True)
        if delta:
            yield delta
        self.completion = self._run.completions()[0]


def _prompts(model: Any, prompt: Any) -> tuple[list[list[int]], bool]:
    def ids(p: Any) -> list[int]:
        if isinstance(p, str):
            if model.tokenizer is None:
                raise ValueError("a text prompt needs a model loaded with its tokenizer; pass token ids instead")
            return model.tokenizer.encode(p)
        a = np.asarray(p.tolist() if hasattr(p, "tolist") else p)
        if a.ndim != 1 or not (a.size == 0 or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"a prompt is a text or a sequence of integer token ids, got {p!r:.80}")
        return [int(i) for i in a]

    if isinstance(prompt, np.ndarray) or hasattr(prompt, "tolist") and not isinstance(prompt, (list, tuple)):
        prompt = prompt.tolist()  # a 2-D array (or Tensor) is a batch of rows, a 1-D one a single prompt
    batched = isinstance(prompt, (list, tuple)) and len(prompt) > 0 and not isinstance(prompt[0], (int, np.integer))
    prompts = [ids(p) for p in (prompt if batched else [prompt])]
    for p in prompts:
        check_prompt(model, p)
    return prompts, batched


def check_prompt(model: Any, ids: Sequence[int]) -> None:
    """Refuse an empty prompt or token ids outside the vocabulary (negative ids would silently index
    the embedding from its end), before any cache is allocated."""
    if len(ids) == 0:
        raise ValueError("a prompt must hold at least one token")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    low, high = min(ids), max(ids)
    if low < 0 or (vocab is not None and high >= vocab):
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is out of range: the model's vocabulary has "
                         f"{vocab if vocab is not None else 'non-negative'} ids"
                         + (f" (0..{vocab - 1})" if vocab is not None else ""))


@dataclass
class _Row:
    """One sequence of the batch: its prompt, what it generated, its text so far, whether it ended.

    The text grows by the pieces of an incremental detokenizer (tokenizer.StreamDecoder: each
    token re-decodes a short window, never an unfinished UTF-8 character), not by decoding
    every generated token again at each step, which made a generation quadratic in its
    length; stop strings are looked for only where the new piece can have completed one.
    """

    prompt: list[int]
    stream: StreamDecoder | None
    stop: Sequence[str]
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    text: str = ""
    emitted: int = 0

    def add(self, token: int, stop_ids: set[int]) -> None:
        if token in stop_ids:
            self.end("stop")
            return
        self.tokens.append(token)
        if self.stream is not None:
            self._extend(self.stream.push(token))

    def end(self, reason: str) -> None:
        """Finish with `reason`; characters the detokenizer held back come out (as U+FFFD if unfinished)."""
        if self.stream is not None:
            self._extend(self.stream.flush())
        if self.finish_reason is None:
            self.finish_reason = reason

    def _extend(self, piece: str) -> None:
        if not piece:
            return
        searched = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
        self.text += piece
        for s in self.stop:
            at = self.text.find(s, searched)
            if at >= 0:
                self.text, self.finish_reason, self.stream = self.text[:at], "stop", None

    def pending_text(self, final: bool) -> str:
        """New text that is safe to show: all of it but a tail that could still grow into a stop
        string (the detokenizer never gives an unfinished character)."""
        end = len(self.text)
        if not final and self.finish_reason is None and self.stop:
            end = max(self.emitted, end - _stop_prefix_tail(self.text, self.stop))
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta


def _stop_prefix_tail(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper prefix of one of `stops` (0 if none)."""
    for n in range(min(len(text), max(len(s) for s in stops) - 1), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0


class _Run:
    """The state of one generation: batch rows, KV cache, sampler; `steps()` advances it token by token."""

    def __init__(self, model: Any, prompts: list[list[int]], opts: SamplingOptions) -> None:
        self.model, self.opts = model, opts
        self.rows = [_Row(p, _stream(model), tuple(opts.stop)) for p in prompts]
        self.stop_ids = stop_ids_of(model, opts)
        if opts.stop and model.tokenizer is None:
            raise ValueError("stop strings need a model loaded with its tokenizer (to see text); "
                             "use stop_token_ids instead")
        # one generator per row, each seeded alike: a row samples what its prompt alone would
        self.rngs = [np.random.default_rng(opts.seed) for _ in prompts]
        longest = max(len(p) for p in prompts)
        self.capacity = longest + opts.max_new_tokens
        if self.capacity > model.max_positions:
            raise ValueError(f"prompt of {longest} tokens + max_new_tokens {opts.max_new_tokens} exceeds the "
                             f"model's context of {model.max_positions} tokens")

    def steps(self) -> Iterator[None]:
        """Prefill, then one decode step per new token; yields after each token is added to every live row."""
        rows, opts, model = self.rows, self.opts, self.model
        if opts.max_new_tokens == 0:
            for r in rows:
                r.finish_reason = "length"
            return
        b, longest = len(rows), max(len(r.prompt) for r in rows)
        pad = rows[0].prompt[0]
        ids = np.array([[pad] * (longest - len(r.prompt)) + r.prompt for r in rows], dtype=np.int64)
        cache = model.new_cache(b, self.capacity)
        lengths = np.array([len(r.prompt) for r in rows])
        cache.key_mask[:, :longest] = np.arange(longest)[None, :] >= (longest - lengths)[:, None]
        positions = np.maximum(np.cumsum(cache.key_mask[:, :longest], axis=1) - 1, 0)
        start, last = 0, positions[:, -1]
        with no_grad():
            while True:
                mask = attention_mask(cache.key_mask, start, ids.shape[1], model.sliding_window)
                logits = model.next_token_logits(ids, positions, mask, cache, start)  # float32; sample widens
                start += ids.shape[1]
                for r, rng, row_logits in zip(rows, self.rngs, logits):
                    if r.finish_reason is None:
                        r.add(sample(row_logits, opts, rng, r.prompt + r.tokens), self.stop_ids)
                        if r.finish_reason is None and len(r.tokens) >= opts.max_new_tokens:
                            r.end("length")
                yield
                if all(r.finish_reason is not None for r in rows):
                    return
                ids = np.array([[r.tokens[-1] if r.tokens else pad] for r in rows], dtype=np.int64)
                cache.key_mask[:, start] = True
                last = last + 1
                positions = last[:, None]

    def completions(self) -> list[Completion]:
        return [Completion(r.text, list(r.tokens), r.finish_reason or "length", len(r.prompt), len(r.tokens))
                for r in self.rows]


def _stream(model: Any) -> StreamDecoder | None:
    """A fresh incremental detokenizer of the model's tokenizer (None without one)."""
    return None if model.tokenizer is None else StreamDecoder(model.tokenizer, skip_special_tokens=True)


def sample(logits: np.ndarray, o: SamplingOptions, rng: np.random.Generator, seen: list[int]) -> int:
    """One token from logits under `o`; `seen` feeds the repetition penalty.

    float64 logits are modified in place; float32 ones are widened to a float64 copy first,
    except for plain greedy decoding, whose argmax is the same either way (the widening is
    exact and keeps the order): at batch 1 that copy of the vocabulary's logits cost as much
    as a decoder layer's norms.
    """
    if o.temperature == 0 and o.repetition_penalty == 1.0:
        return int(np.argmax(logits))
    logits = np.asarray(logits, np.float64)
    if np.isnan(logits).any():  # else numpy's "probabilities contain NaN", which names no cause
        raise FloatingPointError("the model's logits hold NaN: its weights (or the activations they make) are "
                                 "not finite; the checkpoint may be corrupted")
    if o.repetition_penalty != 1.0:
        seen_ids = np.unique(np.array(seen))
        picked = logits[seen_ids]
        logits[seen_ids] = np.where(picked > 0, picked / o.repetition_penalty, picked * o.repetition_penalty)
        # a tiny penalty (down to a subnormal) divides to inf, and inf - inf below would be nan
        np.clip(logits, None, np.finfo(np.float64).max, out=logits)
    if o.temperature == 0:
        return int(np.argmax(logits))
    # shifted first: the largest becomes 0, so a tiny temperature gives -inf elsewhere, never inf - inf = nan
    logits = (logits - logits.max()) / o.temperature
    if 0 < o.top_k < logits.size:
        kth = np.partition(logits, -o.top_k)[-o.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if o.top_p < 1.0:
        order = np.argsort(probs, kind="stable")  # ascending, as transformers' TopPLogitsWarper
        drop = np.cumsum(probs[order]) <= 1 - o.top_p
        drop[-1] = False  # keep at least the most likely token
        probs[order[drop]] = 0
    if o.min_p > 0:
        probs[probs < o.min_p * probs.max()] = 0
    probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


def stop_ids_of(model: Any, opts: SamplingOptions) -> set[int]:
    """Token ids that end a sequence: opts.stop_token_ids, else the tokenizer's (or config's) eos ids."""
    ids = opts.stop_token_ids
    if ids is None:
        ids = getattr(model.tokenizer, "eos_token_ids", None) or _as_list(getattr(model.config, "eos_token_id", None))
    return {int(i) for i in ids}


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]
