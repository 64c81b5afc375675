"""BatchDecoder's prefix sharing (tensora/models/batching.py): a joining prompt copies the
keys and values of the longest prefix an active row holds instead of recomputing them.

Reference: the same prompt joined into a decoder of its own (nothing to share). With a
quantized model on the native kernels every product is computed row by row (fused and
multi-row kernels, bit for bit alike), so the cache rows are equal bit for bit; dense
float32 products go through BLAS, whose blocking may depend on the number of rows, so
there the rows agree within float32 rounding and the greedy tokens are equal.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensora
from tensora.backend import native
from tensora.models.batching import BatchDecoder
from tensora.models.generation import SamplingOptions
from tensora.models.llama import LlamaConfig, LlamaForCausalLM
from tensora.quant import quantize

VOCAB = 96
GREEDY = SamplingOptions(max_new_tokens=8, temperature=0, stop_token_ids=[])


def tiny(fmt: str | None) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128)
    model = LlamaForCausalLM(config)
    rng = np.random.default_rng(5)
    for name, p in model.named_parameters():
        base = 1.0 if name.endswith("norm.weight") else 0.0
        p.data = tensora.tensor((base + rng.standard_normal(p.shape) * 0.2).astype(np.float32))
    if fmt is not None:
        quantize(model, fmt, embeddings=False)
    return model


def cache_row(dec: BatchDecoder, seq) -> list[np.ndarray]:
    row = dec.active.index(seq)
    n = int(dec.cache.lengths[row])
    return [np.concatenate([c.keys.numpy()[row, :, :n], c.values.numpy()[row, :, :n]]) for c in dec.cache.layers]


@pytest.mark.parametrize("fmt", [None, "q4_0", "q8_0"])
def test_shared_prefix_gives_the_cache_and_tokens_of_the_prompt_alone(fmt):
    model = tiny(fmt)
    system = list(range(10, 30))  # a 20-token "system prompt"
    first, second = system + [40, 41, 42], system + [50, 51, 52, 53]
    dec = BatchDecoder(model)
    dec.join(first, GREEDY)
    seq = dec.join(second, GREEDY)
    assert dec.shared_tokens == len(system)
    alone_dec = BatchDecoder(model)
    alone = alone_dec.join(second, GREEDY)
    assert alone_dec.shared_tokens == 0
    exact = fmt is not None and native.load() is not None
    for got, want in zip(cache_row(dec, seq), cache_row(alone_dec, alone)):
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    while dec.active:
        dec.step()
    while alone_dec.active:
        alone_dec.step()
    assert seq.completion().token_ids == alone.completion().token_ids


def test_module_path_shares_prefixes_too():
    """A model the fast path does not take (a hook forces the module path) writes the suffix
    at the shared start through LayerCache.update, and ends with the same tokens."""
    model = tiny("q4_0")
    model.model.layers[0].register_forward_pre_hook(lambda m, args: None)
    system = list(range(10, 30))
    dec = BatchDecoder(model)
    dec.join(system + [40, 41], GREEDY)
    seq = dec.join(system + [60, 61, 62], GREEDY)
    assert dec.shared_tokens == len(system)
    while dec.active:
        dec.step()
    assert seq.completion().token_ids == model.generate(system + [60, 61, 62], max_new_tokens=8, temperature=0,
                                                        stop_token_ids=[]).token_ids


def test_shares_only_what_a_row_holds_and_never_the_last_token():
    model = tiny("q4_0")
    dec = BatchDecoder(model)
    prompt = list(range(1, 13))
    dec.join(prompt, GREEDY)
    again = dec.join(prompt, GREEDY)  # the same prompt: all but its last token are shared
    assert dec.shared_tokens == len(prompt) - 1
    dec.join(list(range(1, 1 + BatchDecoder.MIN_SHARED_PREFIX - 1)) + [90, 91], GREEDY)  # too short a prefix
    assert dec.shared_tokens == len(prompt) - 1
    # A row that already generated: its cached generated tokens count as prefix too.
    dec.step()
    held = again.row.prompt + again.row.tokens[:-1]  # the last sampled token is not cached yet
    before = dec.shared_tokens
    dec.join(held + [7], GREEDY)
    assert dec.shared_tokens - before == len(held)


def test_copy_prefix_checks_its_rows():
    dec = BatchDecoder(tiny(None))
    dec.join([1, 2, 3], GREEDY)
    with pytest.raises(ValueError):
        dec.cache.copy_prefix(0, 1, 2)  # no row 1
    with pytest.raises(ValueError):
        dec.cache.copy_prefix(0, 0, 4)  # row 0 holds 3 positions


def _alone(model, prompt, n=8):
    return model.generate(prompt, max_new_tokens=n, temperature=0, stop_token_ids=[]).token_ids


@pytest.mark.parametrize("path", ["fast q4_0", "fast float32", "module q4_0"])
def test_prompts_joining_together_prefill_together_and_decode_as_if_alone(path, monkeypatch):
    """A burst of chats (one template, suffixes of different lengths, one prompt too long, one
    asking for no tokens) joins in two forward passes: the first prompt computes the template,
    the others copy it and prefill their right-padded suffixes together. Reference: generate()
    on each prompt alone."""
    kind, fmt = path.split()
    model = tiny(None if fmt == "float32" else fmt)
    if kind == "module":
        model.model.layers[0].register_forward_pre_hook(lambda m, args: None)
    system = list(range(10, 30))
    prompts = [system + [40, 41, 42], system + [50], system + [60, 61, 62, 63, 64, 65], list(range(60, 75))]
    dec = BatchDecoder(model)
    calls = []
    forward = model.next_token_logits
    monkeypatch.setattr(model, "next_token_logits", lambda ids, *a: calls.append(ids.shape) or forward(ids, *a))
    too_long = SamplingOptions(max_new_tokens=model.max_positions, temperature=0)
    results = dec.join_many([(p, GREEDY) for p in prompts[:2]] + [(prompts[0], too_long),
                                                                  (prompts[0], SamplingOptions(max_new_tokens=0))]
                            + [(p, GREEDY) for p in prompts[2:]])
    assert isinstance(results[2], ValueError) and results[3].finished and results[3].completion().token_ids == []
    # the first prompt and the unrelated one (padded to 23), then the two that copy the template (6 tokens padded)
    assert calls == [(2, 23), (2, 6)] and dec.shared_tokens == 2 * len(system)
    seqs = results[:2] + results[4:]
    while dec.active:
        dec.step()
    assert [s.completion().token_ids for s in seqs] == [_alone(model, p) for p in prompts]


def test_a_failed_joint_prefill_frees_its_rows():
    model = tiny("q4_0")
    dec = BatchDecoder(model)
    dec.join(list(range(1, 12)), GREEDY)

    def broken(*args):
        raise RuntimeError("out of memory")

    model.next_token_logits = broken
    results = dec.join_many([([5, 6, 7], GREEDY), ([8, 9], GREEDY)])
    assert len(results) == 2 and all(isinstance(r, RuntimeError) for r in results)
    assert dec.cache.rows == len(dec.active) == 1


@pytest.mark.parametrize("path", ["fast", "module"])
def test_the_last_prompt_to_leave_is_kept_for_the_next_join(path):
    """A lone client's next chat (nothing active) copies its template from the prompt of the
    sequence that left last, and still decodes what it would alone."""
    model = tiny("q4_0")
    if path == "module":
        model.model.layers[0].register_forward_pre_hook(lambda m, args: None)
    system = list(range(10, 30))
    dec = BatchDecoder(model)
    first = dec.join(system + [40, 41], GREEDY)
    while dec.active:
        dec.step()
    assert first.finished and dec.cache.rows == 0 and dec.shared_tokens == 0
    second = dec.join(system + [60, 61, 62], GREEDY)
    assert dec.shared_tokens == len(system)
    while dec.active:
        dec.step()
    assert second.completion().token_ids == _alone(model, system + [60, 61, 62])
    dec.join([1, 2, 3] * 4, GREEDY)  # shares nothing with what is kept: computed whole
    assert dec.shared_tokens == len(system)
