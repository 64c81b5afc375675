"""Continuous batching for serving: prompts join and leave between decode steps.

BatchDecoder keeps every active sequence in one row of a layers.SlotKVCache, each at its
own length; a step decodes one token for all of them in one forward. Sampling, stop rules
and streaming text are generation.py's, row for row, so a greedy sequence here gives the
tokens generate() gives for its prompt alone.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..autograd.grad_mode import no_grad
from .generation import Completion, SamplingOptions, _Row, _stream, check_prompt, sample, stop_ids_of
from .layers import SlotKVCache


class BatchedSequence:
    """One prompt inside a BatchDecoder: its tokens and text so far, its own sampling options and generator."""

    def __init__(self, model: Any, prompt: list[int], opts: SamplingOptions) -> None:
        self.row, self.opts = _Row(prompt, _stream(model), tuple(opts.stop)), opts
        self.stop_ids = stop_ids_of(model, opts)
        self.rng = np.random.default_rng(opts.seed)
        self.error: Exception | None = None  # why its sampling failed (it left the decoder then)

    @property
    def finished(self) -> bool:
        return self.row.finish_reason is not None or self.error is not None

    def pending_text(self) -> str:
        """Text generated since the last call that is safe to show (see _Row.pending_text)."""
        return self.row.pending_text(final=self.finished)

    def completion(self) -> Completion:
        if self.error:
            raise self.error  # its sampling failed: there is no completion to give
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
    what it would alone); `step` runs one batched forward over every active sequence, each
    at its own position, and samples each row under its own options; a sequence that
    finishes (or that the caller drops with `leave`) frees its row at once.
    Greedy outputs equal those of generate() on the prompt alone.

    Prefix sharing: chat prompts repeat their template and system prompt (SmolLM2's is 29
    of a typical 46 tokens), and a position's keys and values depend only on the tokens up
    to it. So `join` copies the longest prefix (at least MIN_SHARED_PREFIX tokens) that an
    active sequence already holds in its cache row and prefills only the rest, as vLLM's
    automatic prefix caching does. The kernels compute each token's row on its own (the
    fused and multi-row quantized products, per-row norms and rotations, per-query
    attention), so the copied keys are those the prompt would compute itself. The prompt
    keys of the last sequence to leave are kept too (up to MAX_KEPT_PREFIX positions; 0.5 MB
    for SmolLM2's 46 tokens): a lone client's next chat, or a burst of clients that all finished together,
    finds its template there instead of computing it again (at one client, the time to
    its first token halves).

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
    #: Most prompt positions kept from the last sequence to leave: a template and system
    #: prompt fit; a long document's copy (~12 KB a position for SmolLM2) would rarely pay.
    MAX_KEPT_PREFIX = 512

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache = SlotKVCache(model.new_cache(1, 1), model.max_positions)
        self.active: list[BatchedSequence] = []  # active[i] lives in cache row i
        self.shared_tokens = 0  # prompt tokens copied instead of computed, for tests and benchmarks
        self._kept: tuple[list[int], list[tuple[np.ndarray, np.ndarray]]] | None = None  # (prompt, keys/values)

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

        Clients of a server arrive in bursts (they start, finish and come back together); a
        joint prefill pays the per-call work once (a forward's ~120 kernel calls, their
        dispatch and the weights' decoding), though past a few rows the quantized products
        cost about the same per row either way. Suffixes of different lengths are
        right-padded: each row starts at its own length, its padding lands past it (positions
        the next steps overwrite before any query may see them), and its logits are read at
        its last real position, so every row computes what it would alone.
        """
        results: list[BatchedSequence | Exception] = []
        pending = []
        for prompt, opts in requests:
            try:
                check_prompt(self.model, prompt)  # empty, or ids outside the vocabulary
            except ValueError as exc:
                results.append(exc)
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
        return [seq.error if isinstance(seq, BatchedSequence) and seq.error else seq for seq in results]

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
                if shared and src >= 0:
                    cache.copy_prefix(src, row, shared)
                elif shared:
                    cache.write_prefix(row, [(k[:, :shared], v[:, :shared]) for k, v in self._kept[1]])
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
        self._sample([seq for seq, _, _ in group], logits)

    def _sample(self, seqs: list[BatchedSequence], logits: np.ndarray) -> None:
        """Each sequence takes its token from its row of logits, then the finished ones leave.
        One whose sampling fails keeps the error (seq.error) and leaves too: its own options
        broke on its own logits, and the other rows go on."""
        for seq, row_logits in zip(seqs, logits):
            try:
                seq._take(row_logits)
            except Exception as exc:
                seq.error = exc
        for seq in seqs:
            if seq.finished:
                self.leave(seq)

    def _longest_prefix(self, prompt: list[int]) -> tuple[int, int]:
        """(row, n): the active row (or -1: the kept prompt of the last to leave) whose cached
        tokens share the longest prefix with `prompt`, n of them (0 below MIN_SHARED_PREFIX); at
        most len(prompt) - 1, since the last prompt token must run to give the logits."""
        best_row, best = -1, 0
        if self._kept is not None:
            best = _common_prefix(prompt[:-1], self._kept[0])
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
        self._sample(stepped, logits)
        return stepped

    def leave(self, seq: BatchedSequence) -> None:
        """Free `seq`'s row now (finished, or its client went away); a no-op if it is not active."""
        if seq not in self.active:
            return
        i = self.active.index(seq)
        held = min(len(seq.row.prompt), int(self.cache.lengths[i]), self.MAX_KEPT_PREFIX)
        if held >= self.MIN_SHARED_PREFIX:
            self._kept = seq.row.prompt[:held], self.cache.read_prefix(i, held)
        self.cache.remove_row(i)
        last = self.active.pop()
        if last is not seq:
            self.active[i] = last



def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(differ[0]) if differ.size else n


def _padded(ids: list[int], length: int) -> list[int]:
    """ids right-padded to `length` with their last token (any id would do: padding is never read)."""
    return ids + ids[-1:] * (length - len(ids))
