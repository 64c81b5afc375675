"""Autoregressive generation with a preallocated KV cache: sampling, stop rules, batching, streaming.

One loop serves every entry point. Prompts of different lengths are left-padded into
one batch; the cache's key mask hides the padding and positions count real tokens only,
so each row computes exactly what it would alone. After the prompt (prefill) each step
feeds one token per row and computes logits for that position only.

BatchDecoder is the step-level form for serving (continuous batching): prompts join and
leave between decode steps, each row at its own cache position (layers.SlotKVCache).

Sampling follows transformers' logits processors, in their order: repetition penalty,
temperature, top-k, top-p, min-p; temperature 0 is greedy (argmax). A seed makes a
run reproducible.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from ..autograd.grad_mode import no_grad
from ..memory.layered import TieredModel
from .layers import SlotKVCache, attention_mask
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
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        checks = [(self.max_new_tokens >= 0, "max_new_tokens must be >= 0"),
                  (self.temperature >= 0, "temperature must be >= 0"),
                  (self.top_k >= 0, "top_k must be >= 0"), (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
                  (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
                  (self.repetition_penalty > 0, "repetition_penalty must be > 0")]
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
        return [int(i) for i in (p.tolist() if hasattr(p, "tolist") else p)]

    batched = isinstance(prompt, (list, tuple)) and len(prompt) > 0 and not isinstance(prompt[0], (int, np.integer))
    prompts = [ids(p) for p in (prompt if batched else [prompt])]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt must hold at least one token")
    return prompts, batched


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
        """New text that is safe to show: not a possible stop-string prefix (the detokenizer
        never gives an unfinished character)."""
        end = len(self.text)
        if not final and self.finish_reason is None:
            hold = max((len(s) - 1 for s in self.stop), default=0)
            end = max(self.emitted, end - hold)
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta


class _Run:
    """The state of one generation: batch rows, KV cache, sampler; `steps()` advances it token by token."""

    def __init__(self, model: Any, prompts: list[list[int]], opts: SamplingOptions) -> None:
        self.model, self.opts = model, opts
        self.rows = [_Row(p, _stream(model), tuple(opts.stop)) for p in prompts]
        self.stop_ids = stop_ids_of(model, opts)
        self.rng = np.random.default_rng(opts.seed)
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
                for r, row_logits in zip(rows, logits):
                    if r.finish_reason is None:
                        r.add(self._sample(row_logits, r), self.stop_ids)
                        if r.finish_reason is None and len(r.tokens) >= opts.max_new_tokens:
                            r.end("length")
                yield
                if all(r.finish_reason is not None for r in rows):
                    return
                ids = np.array([[r.tokens[-1] if r.tokens else pad] for r in rows], dtype=np.int64)
                cache.key_mask[:, start] = True
                last = last + 1
                positions = last[:, None]

    def _sample(self, logits: np.ndarray, row: _Row) -> int:
        return sample(logits, self.opts, self.rng, row.prompt + row.tokens)

    def completions(self) -> list[Completion]:
        return [Completion(r.text, list(r.tokens), r.finish_reason or "length", len(r.prompt), len(r.tokens))
                for r in self.rows]


class BatchedSequence:
    """One prompt inside a BatchDecoder: its tokens and text so far, its own sampling options and generator."""

    def __init__(self, model: Any, prompt: list[int], opts: SamplingOptions) -> None:
        self.row, self.opts = _Row(prompt, _stream(model), tuple(opts.stop)), opts
        self.stop_ids = stop_ids_of(model, opts)
        self.rng = np.random.default_rng(opts.seed)

    @property
    def finished(self) -> bool:
        return self.row.finish_reason is not None

    def pending_text(self) -> str:
        """Text generated since the last call that is safe to show (see _Row.pending_text)."""
        return self.row.pending_text(final=self.finished)

    def completion(self) -> Completion:
        r = self.row
        return Completion(r.text, list(r.tokens), r.finish_reason or "length", len(r.prompt), len(r.tokens))

    def _take(self, logits: np.ndarray) -> None:
        r = self.row
        r.add(sample(logits, self.opts, self.rng, r.prompt + r.tokens), self.stop_ids)
        if r.finish_reason is None and len(r.tokens) >= self.opts.max_new_tokens:
            r.end("length")


class BatchDecoder:
    """Continuous batching: prompts join at any time, decode together one token per step, leave at once.

    `join` prefills a prompt into a fresh row of a SlotKVCache and samples its first token
    (`join_many` prefills prompts that arrive together in one forward, each row computing
    what it would alone); `step` runs one batched forward over every
    active sequence, each at its own position, and samples each row under its own options;
    a sequence that finishes (or that the caller drops with `leave`) frees its row at once.
    Greedy outputs equal those of generate() on the prompt alone.

    Prefix sharing: chat prompts repeat their template and system prompt (SmolLM2's is 29
    of a typical 46 tokens), and a position's keys and values depend only on the tokens up
    to it. So `join` copies the longest prefix (at least MIN_SHARED_PREFIX tokens) that an
    active sequence already holds in its cache row and prefills only the rest, as vLLM's
    automatic prefix caching does. The kernels compute each token's row on its own (the
    fused and multi-row quantized products, per-row norms and rotations, per-query
    attention), so the copied keys are those the prompt would compute itself.

        >>> from tensora.models import default_model_path, load
        >>> model = load(default_model_path())
        >>> ids_a, ids_b = (model.tokenizer.encode(t) for t in ("The capital of France is", "1, 2, 3,"))
        >>> dec = BatchDecoder(model)
        >>> a = dec.join(ids_a, SamplingOptions(temperature=0, max_new_tokens=4))
        >>> b = dec.join(ids_b, SamplingOptions(temperature=0.8, max_new_tokens=4, seed=1))
        >>> while dec.active:
        ...     _ = dec.step()
        >>> a.completion().token_ids == model.generate(ids_a, max_new_tokens=4, temperature=0).token_ids
        True
    """

    #: Shortest common prefix worth copying: below it, a copy per layer and row costs about
    #: what recomputing those few tokens would.
    MIN_SHARED_PREFIX = 8

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache = SlotKVCache(model.new_cache(1, 1), model.max_positions)
        self.active: list[BatchedSequence] = []  # active[i] lives in cache row i
        self.shared_tokens = 0  # prompt tokens copied instead of computed, for tests and benchmarks

    def join(self, prompt: list[int], opts: SamplingOptions) -> BatchedSequence:
        """Prefill `prompt` and sample its first token; it stays active unless that already ended it."""
        (result,) = self.join_many([(prompt, opts)])
        if isinstance(result, Exception):
            raise result
        return result

    def join_many(self, requests: Sequence[tuple[list[int], SamplingOptions]]) -> list[BatchedSequence | Exception]:
        """Join several prompts at once: what `join` does for each, prefilled in as few forward
        passes as prefix sharing allows. Returns, in order, each one's sequence or the error
        that refused it alone (a prompt too long, say); a failed forward fails its group.

        Clients of a server arrive in bursts (they start, finish and come back together), and
        a joint prefill reads every weight once per burst instead of once per prompt, and pays
        the per-call overheads once. Suffixes of different lengths are right-padded: each row
        starts at its own length, its padding lands past it (positions the next steps
        overwrite before any query may see them), and its logits are read at its last real
        position, so every row computes what it would alone.
        """
        results: list[BatchedSequence | Exception] = []
        pending = []
        for prompt, opts in requests:
            if not prompt:
                results.append(ValueError("a prompt must hold at least one token"))
                continue
            if opts.max_new_tokens == 0:
                seq = BatchedSequence(self.model, prompt, opts)
                seq.row.finish_reason = "length"
                results.append(seq)
                continue
            if len(prompt) + opts.max_new_tokens > self.model.max_positions:
                results.append(ValueError(f"prompt of {len(prompt)} tokens + max_new_tokens {opts.max_new_tokens} "
                                          f"exceeds the model's context of {self.model.max_positions} tokens"))
                continue
            seq = BatchedSequence(self.model, prompt, opts)
            results.append(seq)
            pending.append(seq)
        while pending:
            group, pending = self._next_group(pending)
            try:
                self._prefill(group)
            except Exception as exc:  # a model error: this group's prompts fail, later ones still try
                for seq, _, _ in group:
                    results[results.index(seq)] = exc
        return results

    def _next_group(self, seqs: list[BatchedSequence]) -> tuple[list[tuple[BatchedSequence, int, int]],
                                                                    list[BatchedSequence]]:
        """([(sequence, source row, shared length)], the rest): the sequences to prefill together now.

        One waits for a later group where a sequence of this group will hold a longer prefix of
        its prompt than any active row does (the first of a burst of chats computes the
        template, the others copy it), or where its padding would reach past the positions
        the group's rows reserve."""
        group: list[tuple[BatchedSequence, int, int]] = []
        later = []
        for seq in seqs:
            prompt = seq.row.prompt
            src, shared = self._longest_prefix(prompt)
            wait = any(_common_prefix(prompt[:-1], g.row.prompt) >= max(shared + 1, self.MIN_SHARED_PREFIX)
                       for g, _, _ in group)
            members = group + [(seq, src, shared)]
            suffix = max(len(g.row.prompt) - n for g, _, n in members)
            reserved = max(len(g.row.prompt) + g.opts.max_new_tokens for g, _, _ in members)
            if group and (wait or max(n for _, _, n in members) + suffix > reserved):
                later.append(seq)
            else:
                group = members
        return group, later

    def _prefill(self, group: list[tuple[BatchedSequence, int, int]]) -> None:
        """One forward over the group's prompt suffixes (see join_many); then each samples its first token."""
        model, cache, first = self.model, self.cache, self.cache.rows
        suffix = max(len(seq.row.prompt) - shared for seq, _, shared in group)
        try:
            for seq, src, shared in group:
                # reserving its own positions makes room for every row's padding (_next_group)
                row = cache.add_row(len(seq.row.prompt) + seq.opts.max_new_tokens)
                if shared:
                    cache.copy_prefix(src, row, shared)
                cache.lengths[row] = shared
            view = cache.rows_view(first, len(group))
            ids = np.array([_padded(seq.row.prompt[shared:], suffix) for seq, _, shared in group], dtype=np.int64)
            positions = view.lengths[:, None] + np.arange(suffix)[None, :]
            last = np.array([len(seq.row.prompt) - shared - 1 for seq, _, shared in group])
            with no_grad():
                logits = model.next_token_logits(ids, positions, view.decode_mask(model.sliding_window, suffix),
                                                 view, 0, last)
        except BaseException:
            while cache.rows > first:
                cache.remove_row(cache.rows - 1)
            raise
        for i, (seq, _, shared) in enumerate(group):
            cache.lengths[first + i] = len(seq.row.prompt)
            self.shared_tokens += shared
            self.active.append(seq)
        for (seq, _, _), row_logits in zip(group, logits):
            seq._take(row_logits)
        for seq, _, _ in group:
            if seq.finished:
                self.leave(seq)

    def _longest_prefix(self, prompt: list[int]) -> tuple[int, int]:
        """(row, n): the active row whose cached tokens share the longest prefix with `prompt`,
        n of them (0 below MIN_SHARED_PREFIX); at most len(prompt) - 1, since the last prompt
        token must run to give the logits."""
        best_row, best = -1, 0
        for i, seq in enumerate(self.active):
            held = seq.row.prompt + seq.row.tokens  # the cache holds the first lengths[i] of these
            n = min(int(self.cache.lengths[i]), len(prompt) - 1)
            if n <= best:
                continue
            common = _common_prefix(prompt[:n], held[:n])
            if common > best:
                best_row, best = i, common
        return (best_row, best) if best >= self.MIN_SHARED_PREFIX else (-1, 0)

    def step(self) -> list[BatchedSequence]:
        """One token for every active sequence (one batched forward); returns them. Finished ones have left."""
        if not self.active:
            return []
        model, cache, stepped = self.model, self.cache, list(self.active)
        n = cache.rows
        ids = np.array([[s.row.tokens[-1]] for s in stepped], dtype=np.int64)
        positions = cache.lengths[:n, None].copy()
        mask = cache.decode_mask(model.sliding_window)
        with no_grad():
            # float32: sample() widens a row only where its options need float64 (not greedy)
            logits = model.next_token_logits(ids, positions, mask, cache, 0)
        cache.lengths[:n] += 1
        for s, row_logits in zip(stepped, logits):
            s._take(row_logits)
        for s in stepped:
            if s.finished:
                self.leave(s)
        return stepped

    def leave(self, seq: BatchedSequence) -> None:
        """Free `seq`'s row now (finished, or its client went away); a no-op if it is not active."""
        if seq not in self.active:
            return
        i = self.active.index(seq)
        self.cache.remove_row(i)
        last = self.active.pop()
        if last is not seq:
            self.active[i] = last


def _stream(model: Any) -> StreamDecoder | None:
    """A fresh incremental detokenizer of the model's tokenizer (None without one)."""
    return None if model.tokenizer is None else StreamDecoder(model.tokenizer, skip_special_tokens=True)


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(differ[0]) if differ.size else n


def _padded(ids: list[int], length: int) -> list[int]:
    """ids right-padded to `length` with their last token (any id would do: padding is never read)."""
    return ids + ids[-1:] * (length - len(ids))


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
    if o.repetition_penalty != 1.0:
        seen_ids = np.unique(np.array(seen))
        picked = logits[seen_ids]
        logits[seen_ids] = np.where(picked > 0, picked / o.repetition_penalty, picked * o.repetition_penalty)
    if o.temperature == 0:
        return int(np.argmax(logits))
    logits = logits / o.temperature
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
