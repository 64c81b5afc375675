"""The Llama inference fast path (tensora/models/llama_decode.py) against the module path.

Tiny random models built here (float32 within 1e-5 relative, identical greedy tokens;
q8_0/q4_0 within the fused kernel's activation rounding), through every entry point that
uses it: prefill and decode steps, generate (single and left-padded batches), stream, the
serving engine's BatchDecoder. The module path is forced by a forward hook, which also
checks that hooks (tensora.memory's layer-by-layer execution) are never bypassed.
"""

from __future__ import annotations

import gc
import mmap
import weakref

import numpy as np
import pytest

import tensora
from tensora.autograd.grad_mode import no_grad
from tensora.models import llama_decode
from tensora.models.base import CausalLM
from tensora.models.batching import BatchDecoder
from tensora.models.generation import SamplingOptions
from tensora.models.layers import attention_mask
from tensora.models.llama import LlamaConfig, LlamaForCausalLM
from tensora.quant import QuantizedTensor, quantize

VOCAB = 96


def tiny(seed: int = 0, **overrides) -> LlamaForCausalLM:
    options = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(LlamaConfig(**(options | overrides)))
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        base = 1.0 if name.endswith("norm.weight") else 0.0
        p.data = tensora.tensor((base + rng.standard_normal(p.shape) * 0.2).astype(np.float32))
    return model


def _module_path(model) -> list:
    """Forces the module path (a forward hook) and returns the list the hook appends to."""
    calls = []
    model.model.layers[0].register_forward_pre_hook(lambda m, args: calls.append(1))
    return calls


def _steps(model, prompt: np.ndarray, steps: int, fast: bool) -> list[np.ndarray]:
    """Logits of a prefill then greedy decode steps, through next_token_logits or the module path."""
    b, t = prompt.shape
    cache = model.new_cache(b, t + steps)
    cache.key_mask[:, :t] = True
    step = model.next_token_logits if fast else (lambda *a: CausalLM.next_token_logits(model, *a))
    ids, positions, start, out = prompt, np.arange(t)[None].repeat(b, 0), 0, []
    with no_grad():
        for _ in range(steps):
            mask = attention_mask(cache.key_mask, start, ids.shape[1], model.sliding_window)
            logits = step(ids, positions, mask, cache, start)
            out.append(logits)
            start += ids.shape[1]
            cache.key_mask[:, start] = True
            ids, positions = logits.argmax(-1)[:, None], np.full((b, 1), start)
    return out


VARIANTS = {"gqa": {}, "mha": {"num_key_value_heads": 4}, "qkv_bias": {"qkv_bias": True, "o_bias": True},
            "window": {"sliding_window": 5}, "mqa_odd_dims": {"num_key_value_heads": 1, "head_dim": 6},
            "no_layers": {"num_hidden_layers": 0}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_logits_match_module_path(variant):
    model = tiny(**VARIANTS[variant])
    prompt = np.random.default_rng(1).integers(0, VOCAB, size=(2, 7))
    want = _steps(model, prompt, 6, fast=False)
    got = _steps(model, prompt, 6, fast=True)
    assert _fast(model) is not None  # it did run
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * np.abs(w).max())
        np.testing.assert_array_equal(g.argmax(-1), w.argmax(-1))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantized_logits_match_module_path(fmt):
    model = tiny(seed=2)
    quantize(model, fmt, embeddings=False)
    prompt = np.random.default_rng(3).integers(0, VOCAB, size=(1, 9))
    want = _steps(model, prompt, 5, fast=False)
    got = _steps(model, prompt, 5, fast=True)
    for g, w in zip(got, want):  # same GEMVs; float32 norms/attention in another order, then 15-bit activations
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-3 * np.abs(w).max())


def test_weights_are_merged_into_views_and_the_module_path_still_agrees():
    model, ids = tiny(), np.random.default_rng(4).integers(0, VOCAB, size=(1, 6))
    before = model(ids).detach().numpy()
    _steps(model, ids, 2, fast=True)
    attn = model.model.layers[0].self_attn
    q, k = attn.q_proj.weight.detach().numpy(), attn.k_proj.weight.detach().numpy()
    assert q.base is not None and q.base is k.base  # one merged buffer, no second copy
    np.testing.assert_array_equal(model(ids).detach().numpy(), before)


def test_quantized_merge_rebinds_packed_views():
    model = tiny()
    quantize(model, "q8_0", embeddings=False)
    _steps(model, np.zeros((1, 3), np.int64), 1, fast=True)
    mlp = model.model.layers[1].mlp
    gate, up = mlp.gate_proj.weight.packed()["blocks"], mlp.up_proj.weight.packed()["blocks"]
    assert gate.base is not None and gate.base is up.base


def _root(a: np.ndarray) -> np.ndarray:
    """The array at the end of `a`'s chain of views."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _owned_arrays(model) -> dict[str, "weakref.ref"]:
    """Weak references to the arrays that own the memory of every projection and embedding weight."""
    refs = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if w is None or name.endswith("norm"):
            continue
        parts = w.packed() if isinstance(w, QuantizedTensor) else {"": w.detach().numpy()}
        refs |= {f"{name}{part}": weakref.ref(_root(a)) for part, a in parts.items()}
    return refs


@pytest.mark.parametrize("fmt", [None, "q8_0", "q4_0"])
@pytest.mark.parametrize("tied", [True, False])
def test_projection_weights_move_to_one_huge_page_buffer_and_the_originals_are_freed(fmt, tied):
    model = tiny(seed=8, tie_word_embeddings=tied)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    if fmt is not None:
        quantize(model, fmt, embeddings=True)
        if tied:
            model.lm_head.weight = model.model.embed_tokens.weight
    ids = np.random.default_rng(9).integers(0, VOCAB, size=(1, 5))
    before, originals = model(ids).detach().numpy(), _owned_arrays(model)
    _steps(model, ids, 2, fast=True)
    gc.collect()
    linears = [m for layer in model.model.layers for m in llama_decode._linears(layer)] + [model.lm_head]
    roots = {id(_root(a)): _root(a) for m in linears
             for a in (m.weight.packed().values() if fmt else [m.weight.detach().numpy()])}
    assert len(roots) == 1  # one buffer for all
    (root,) = roots.values()
    assert isinstance(root.base, memoryview) and isinstance(root.base.obj, mmap.mmap)  # huge_pages.empty's
    assert (model.model.embed_tokens.weight is model.lm_head.weight) == tied  # a tied embedding followed
    untied_embed = {n for n in originals if n.startswith("model.embed_tokens") and not tied}
    assert {n for n, r in originals.items() if r() is not None} == untied_embed  # no second copy
    np.testing.assert_array_equal(model(ids).detach().numpy(), before)  # same bytes, new place


def _greedy(model, prompt, n=12):
    return model.generate(prompt, max_new_tokens=n, temperature=0, stop_token_ids=[])


def test_generate_and_stream_equal_the_module_path():
    fast_model, slow_model = tiny(seed=5), tiny(seed=5)
    calls = _module_path(slow_model)
    prompt = [3, 14, 15, 92, 65, 35]
    want = _greedy(slow_model, prompt).token_ids
    assert calls, "the hooked model must run its layers (module path)"
    assert _greedy(fast_model, prompt).token_ids == want
    batch = [prompt, [7, 1, 8], [2, 71, 82, 81, 82, 84, 59, 45]]  # left padding, per-row positions
    assert [c.token_ids for c in _greedy(fast_model, batch)] == [c.token_ids for c in _greedy(slow_model, batch)]


def test_batch_decoder_rows_at_their_own_lengths_equal_the_module_path():
    results = []
    for fast in (True, False):
        model = tiny(seed=6)
        if not fast:
            _module_path(model)
        dec = BatchDecoder(model)
        opts = SamplingOptions(max_new_tokens=10, temperature=0, stop_token_ids=[])
        seqs = [dec.join([5, 6, 7], opts), dec.join([9, 10, 11, 12, 13, 14, 15], opts)]
        dec.step()
        seqs.append(dec.join([40, 41], opts))  # joins mid-way: rows at different lengths
        while dec.active:
            dec.step()
        results.append([s.completion().token_ids for s in seqs])
    assert results[0] == results[1]


def _fast(model):
    with no_grad():
        return llama_decode.fast_path(model, model.new_cache(1, 4))


def test_falls_back_when_tiered_hooked_or_differentiating():
    model = tiny()
    assert _fast(model) is not None
    model.memory = object()  # a tensora.memory tiered model brings weights in through layer hooks
    assert _fast(model) is None
    del model.memory
    handle = model.model.layers[1].mlp.register_forward_hook(lambda m, a, o: None)
    assert _fast(model) is None
    handle.remove()
    assert _fast(model) is not None
    assert llama_decode.fast_path(model, model.new_cache(1, 4)) is None  # gradients on


def test_row_views_of_a_slot_cache_are_checked_with_it(monkeypatch):
    """A serving engine prefills joins through row views of its slot cache: the eligibility
    checks run once for the cache, not again for every view and step after it."""
    from tensora.models.layers import SlotKVCache

    model, checks = tiny(), []
    real = llama_decode.eligible
    monkeypatch.setattr(llama_decode, "eligible", lambda m: checks.append(1) or real(m))
    slots = SlotKVCache(model.new_cache(1, 1), model.max_positions)
    slots.add_row(8)
    slots.add_row(8)
    with no_grad():
        views = (slots, slots.rows_view(0, 1), slots.rows_view(1, 1), slots.rows_view(0, 2), slots)
        decoders = {id(llama_decode.fast_path(model, c)) for c in views}
        assert len(decoders) == 1 and len(checks) == 1
        assert llama_decode.fast_path(model, model.new_cache(1, 4)) is not None  # another cache: checked again
    assert len(checks) == 2


def test_numpy_bodies_give_the_same_tokens(monkeypatch):
    """The reference kernels (what TENSORA_NO_NATIVE=1 runs) against the native ones."""
    from tensora.kernels import decode as dk

    prompt = [4, 8, 15, 16, 23, 42]
    native = _greedy(tiny(seed=7), prompt).token_ids
    for k in (dk.rms_norm_rows, dk.rotary_qkv, dk.silu_mul, dk.gqa_attention):
        monkeypatch.setattr(k, "native", None)
    assert _greedy(tiny(seed=7), prompt).token_ids == native


def test_smollm2_fast_path_matches_module_path():
    from tensora.models import default_model_path, load

    model = load(default_model_path())
    prompt = np.array([model.tokenizer.encode("The capital of France is")])
    want = _steps(model, prompt, 4, fast=False)
    got = _steps(model, prompt, 4, fast=True)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-3 * np.abs(w).max())
        assert g.argmax() == w.argmax()
