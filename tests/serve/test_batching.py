"""The continuous-batching decoder and engine against generate() run on each prompt alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tensora.models.batching import BatchDecoder
from tensora.models.generation import SamplingOptions
from tensora.serve import Engine, QueueFull


def _prompts(model, n):
    rng = np.random.default_rng(1)
    vocab = model.config.vocab_size - 2  # no special tokens inside prompts
    return [rng.integers(0, vocab, size=int(rng.integers(2, 30))).tolist() for _ in range(n)]


def test_rows_that_join_and_leave_decode_as_if_alone(tiny_model):
    """Prompts join between steps (and at different lengths), leave at different times: greedy = alone."""
    prompts, lengths = _prompts(tiny_model, 7), [5, 17, 1, 9, 30, 12, 3]
    alone = [tiny_model.generate(p, max_new_tokens=n, temperature=0, stop_token_ids=[]).token_ids
             for p, n in zip(prompts, lengths)]
    dec = BatchDecoder(tiny_model)
    seqs = []
    for p, n in zip(prompts, lengths):
        seqs.append(dec.join(p, SamplingOptions(max_new_tokens=n, temperature=0, stop_token_ids=[])))
        dec.step()  # each newcomer joins a batch already mid-way
    while dec.active:
        dec.step()
    assert [s.completion().token_ids for s in seqs] == alone
    assert all(s.completion().finish_reason == "length" for s in seqs)
    assert dec.cache.rows == 0 and dec.cache.capacity == 16  # idle again: the grown cache was given back


def test_each_row_samples_with_its_own_options_and_seed(tiny_model):
    """A seeded sampled row equals generate() with that seed, whatever greedy rows share its steps."""
    p, q = _prompts(tiny_model, 2)
    opts = dict(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7, stop_token_ids=[])
    want = tiny_model.generate(p, **opts).token_ids
    dec = BatchDecoder(tiny_model)
    greedy = dec.join(q, SamplingOptions(max_new_tokens=20, temperature=0, stop_token_ids=[]))
    sampled = dec.join(p, SamplingOptions(**opts))
    while dec.active:
        dec.step()
    assert sampled.completion().token_ids == want
    assert greedy.completion().token_ids == tiny_model.generate(q, max_new_tokens=20, temperature=0,
                                                                stop_token_ids=[]).token_ids


@pytest.mark.parametrize("when", ["join", "step"])
def test_a_row_whose_sampling_fails_fails_alone(tiny_model, monkeypatch, when):
    """Sampling runs per row: the row it fails for gets the error and leaves (its cache row
    freed), the others decode on as if alone. Before, a first-token failure left a row with no
    tokens in the batch, and every later step failed."""
    from tensora.models import batching

    prompts = _prompts(tiny_model, 3)
    opts = SamplingOptions(max_new_tokens=6, temperature=0, stop_token_ids=[])
    alone = [tiny_model.generate(p, max_new_tokens=6, temperature=0, stop_token_ids=[]).token_ids for p in prompts]
    take = batching.BatchedSequence._take
    bad = prompts[1]

    def failing(self, logits):
        if self.row.prompt == bad and (when == "join" or self.row.tokens):
            raise ValueError("sampling broke")
        take(self, logits)

    monkeypatch.setattr(batching.BatchedSequence, "_take", failing)
    dec = BatchDecoder(tiny_model)
    results = dec.join_many([(p, opts) for p in prompts])
    if when == "join":
        assert isinstance(results[1], ValueError) and len(dec.active) == 2
    while dec.active:
        dec.step()
    failed = results[1] if when == "join" else results[1].error
    assert isinstance(failed, ValueError) and "sampling broke" in str(failed)
    if when == "step":
        with pytest.raises(ValueError, match="sampling broke"):
            results[1].completion()
    assert [results[i].completion().token_ids for i in (0, 2)] == [alone[0], alone[2]]
    assert dec.cache.rows == 0


def test_leaving_frees_the_row_and_others_continue(tiny_model):
    prompts = _prompts(tiny_model, 3)
    dec = BatchDecoder(tiny_model)
    seqs = [dec.join(p, SamplingOptions(max_new_tokens=10, temperature=0, stop_token_ids=[])) for p in prompts]
    dec.step()
    dec.leave(seqs[0])  # a client went away: the last row moves into its place
    assert dec.cache.rows == 2 and seqs[0] not in dec.active
    while dec.active:
        dec.step()
    for p, s in zip(prompts[1:], seqs[1:]):
        assert s.completion().token_ids == tiny_model.generate(p, max_new_tokens=10, temperature=0,
                                                               stop_token_ids=[]).token_ids
    assert len(seqs[0].completion().token_ids) == 2


def test_stop_token_and_zero_tokens(tiny_model):
    p = _prompts(tiny_model, 1)[0]
    first = tiny_model.generate(p, max_new_tokens=1, temperature=0, stop_token_ids=[]).token_ids[0]
    dec = BatchDecoder(tiny_model)
    stopped = dec.join(p, SamplingOptions(max_new_tokens=10, temperature=0, stop_token_ids=[first]))
    empty = dec.join(p, SamplingOptions(max_new_tokens=0))
    assert (stopped.finished, stopped.completion().finish_reason, stopped.completion().token_ids) == (True, "stop", [])
    assert empty.completion().finish_reason == "length" and not dec.active
    with pytest.raises(ValueError, match="context"):
        dec.join(p, SamplingOptions(max_new_tokens=tiny_model.max_positions))


def test_engine_queue_is_bounded(tiny_model):
    """Nothing is decoding (the engine is not started): the third request finds the queue full."""
    engine = Engine(tiny_model, max_batch=1, max_queue=2)

    async def submit_three():
        engine.submit([1, 2], SamplingOptions())
        engine.submit([1, 2], SamplingOptions())
        with pytest.raises(QueueFull, match="2 requests are already waiting"):
            engine.submit([1, 2], SamplingOptions())

    asyncio.run(submit_three())
    assert engine.waiting == 2


def test_engine_batches_concurrent_requests(tiny_model):
    prompts = _prompts(tiny_model, 6)
    opts = SamplingOptions(max_new_tokens=16, temperature=0, stop_token_ids=[])
    engine = Engine(tiny_model, max_batch=4).start()

    async def run_all():
        requests = [engine.submit(p, opts) for p in prompts]
        return await asyncio.gather(*(r.result() for r in requests))

    try:
        results = asyncio.run(run_all())
    finally:
        engine.stop()
    for p, c in zip(prompts, results):
        assert c.token_ids == tiny_model.generate(p, max_new_tokens=16, temperature=0, stop_token_ids=[]).token_ids
    assert engine.rows_stepped / engine.steps > 2  # several rows per step, never more than max_batch
    assert engine.rows_stepped <= 4 * engine.steps


def test_engine_prefills_waiting_requests_together_within_its_token_budget(tiny_model):
    """Requests waiting together join in one joint prefill of at most `prefill_tokens` prompt
    tokens (one longer request still joins alone); tokens equal generate() alone."""
    prompts = [[5, 6, 7] * 4, [8, 9] * 3, [10, 11, 12] * 5, [13] * 40, [14, 15]]
    opts = SamplingOptions(max_new_tokens=6, temperature=0, stop_token_ids=[])
    engine = Engine(tiny_model, max_batch=8, prefill_tokens=32)
    joins = []
    join_many = engine.decoder.join_many
    engine.decoder.join_many = lambda requests: joins.append([len(p) for p, _ in requests]) or join_many(requests)

    async def run_all():
        requests = [engine.submit(p, opts) for p in prompts]  # all wait before the engine starts
        engine.start()
        return await asyncio.gather(*(r.result() for r in requests))

    try:
        results = asyncio.run(run_all())
    finally:
        engine.stop()
    assert joins == [[12, 6], [15], [40], [2]]
    for p, c in zip(prompts, results):
        assert c.token_ids == tiny_model.generate(p, max_new_tokens=6, temperature=0, stop_token_ids=[]).token_ids
