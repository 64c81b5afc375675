"""Conversions between the two kinds of checkpoint: a GGUF to a Hugging Face directory in any tensora
format (config.json and tokenizer files generated), and a Hugging Face directory to the GGUF that
llama.cpp's convert_hf_to_gguf.py writes (checked against the converter's layout in llama_gguf.py and
bert_gguf.py, against transformers, and by round trips that must be bit-exact)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tensora.io as tio
from tensora.autograd.grad_mode import no_grad
from tensora.cli import main
from tensora.io import FormatError
from tensora.models import load, load_tokenizer
from tensora.models.convert import ConversionError, quantize_checkpoint
from tensora.models.tokenizer_export import PROBE_TEXTS
from tensora.quant import QuantizedLinear, QuantizedTensor

from models.conftest import VOCAB
from models.llama_gguf import llama_gguf_parts


def _logits(model, ids) -> np.ndarray:
    with no_grad():
        return model(np.asarray([ids])).numpy()[0]


def _values(t) -> np.ndarray:
    """A GGUF tensor's stored bytes/values, for exact comparisons."""
    return np.asarray(t.packed()["blocks"] if isinstance(t, QuantizedTensor) else t.numpy())


def _same_tokenizers(a, b) -> None:
    for text in PROBE_TEXTS:
        assert a.encode(text) == b.encode(text), text
    assert a.eos_token_ids == b.eos_token_ids and a.bos_token_id == b.bos_token_id
    assert a.chat_template == b.chat_template


@pytest.fixture(scope="module")
def smollm2_f32_dir(smollm2_path, tmp_path_factory):
    """SmolLM2's GGUF written as a float32 Hugging Face directory."""
    return quantize_checkpoint(smollm2_path, tmp_path_factory.mktemp("smol") / "f32", "f32", progress=False)


# -- GGUF -> directory -----------------------------------------------------------------------------

def test_gguf_to_f32_directory_computes_what_the_gguf_computes(smollm2_path, smollm2_f32_dir):
    original, again = load(smollm2_path), load(smollm2_f32_dir)
    files = {p.name for p in smollm2_f32_dir.iterdir()}
    assert files == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "generation_config.json"}
    assert {t.dtype.name for t in tio.load(smollm2_f32_dir / "model.safetensors").values()} == {"float32"}
    ids = original.tokenizer.encode("The capital of France is")
    a, b = _logits(again, ids), _logits(original, ids)
    assert np.abs(a - b).max() < 1e-3 * np.abs(b).max()  # measured 5e-4 RMS: the GGUF's fused 15-bit products
    _same_tokenizers(again.tokenizer, original.tokenizer)


def test_gguf_to_nf4_directory_is_quantize_on_load_of_its_decoded_weights(smollm2_path, smollm2_f32_dir, tmp_path):
    out = quantize_checkpoint(smollm2_path, tmp_path / "nf4", "nf4", progress=False, double_quant=True)
    model = load(out)
    assert {m.weight.format.name for m in model.modules() if isinstance(m, QuantizedLinear)} == {"nf4"}
    assert tio.read_metadata(out / "model.safetensors")["tensora.quantized"] == "nf4"
    ids = model.tokenizer.encode("The capital of France is")
    direct = load(smollm2_f32_dir, quantize="nf4", double_quant=True)
    np.testing.assert_array_equal(_logits(model, ids), _logits(direct, ids))
    _same_tokenizers(model.tokenizer, load_tokenizer(smollm2_path))


def test_gguf_to_directory_loads_in_transformers(smollm2_path, smollm2_f32_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoModelForCausalLM.from_pretrained(smollm2_f32_dir).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(smollm2_f32_dir)
    ours = load(smollm2_f32_dir)
    for text in PROBE_TEXTS + ("<|im_start|>user\nhi<|im_end|>",):
        assert ref_tok(text)["input_ids"] == ours.tokenizer.encode(text), text
    messages = [{"role": "user", "content": "What is 2+2?"}]
    assert ref_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        ours.tokenizer.apply_chat_template(messages, tokenize=False)
    ids = ours.tokenizer.encode("The capital of France is")
    with torch.no_grad():
        theirs = ref(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(_logits(ours, ids) - theirs).max() < 1e-4 * np.abs(theirs).max()


# -- directory -> GGUF -----------------------------------------------------------------------------

def test_gguf_through_a_directory_and_back_is_bit_exact(smollm2_path, smollm2_f32_dir, tmp_path):
    """GGUF -> f32 directory -> q8_0 GGUF writes the bytes GGUF -> q8_0 GGUF writes: names, Q/K row order,
    tied output, every tokenizer key (the split recipe found by behaviour included)."""
    via_dir = tio.load_gguf(quantize_checkpoint(smollm2_f32_dir, tmp_path / "a.gguf", "q8_0", progress=False))
    direct = tio.load_gguf(quantize_checkpoint(smollm2_path, tmp_path / "b.gguf", "q8_0", progress=False))
    assert set(via_dir.tensors) == set(direct.tensors)
    for name, t in direct.tensors.items():
        np.testing.assert_array_equal(_values(via_dir.tensors[name]), _values(t), err_msg=name)
    for key, value in direct.metadata.items():
        if key.startswith(("tokenizer.", "llama.")) and key != "tokenizer.ggml.add_space_prefix":
            theirs = via_dir.metadata[key]
            assert (list(theirs) == list(value)) if isinstance(value, (list, np.ndarray)) else theirs == value, key
    assert via_dir.metadata["general.file_type"] == direct.metadata["general.file_type"] == 7  # MOSTLY_Q8_0


@pytest.mark.parametrize("name", ["llama", "llama3_tied", "qwen2", "gpt2"])
def test_hf_directory_to_gguf_is_the_converter_layout_and_computes_the_same(hf_models, tmp_path, name):
    torch = pytest.importorskip("torch")
    src, ref = hf_models[name]
    with pytest.warns(UserWarning, match="no tokenizer.json: the GGUF holds weights only"):
        f = tio.load_gguf(quantize_checkpoint(src, tmp_path / "m.gguf", "f32", progress=False))
    if name.startswith("llama"):  # llama_gguf.py writes what convert_hf_to_gguf writes for LlamaModel
        want, meta = llama_gguf_parts(ref, VOCAB)
        assert set(f.tensors) == set(want)
        for key, t in want.items():
            np.testing.assert_allclose(f.tensors[key].numpy(), t.numpy(), rtol=1e-6, err_msg=key)
        assert {k: f.metadata[k] for k in meta} == pytest.approx(meta)
    ids = [1, 5, 9, 17, 33, 65, 100, 127]
    with torch.no_grad():
        theirs = ref(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(_logits(load(f.path), ids) - theirs).max() < 1e-4 * np.abs(theirs).max()
    # and back to a dense directory, which transformers loads (GPT-2's Conv1D weights in its layout again)
    back = quantize_checkpoint(f.path, tmp_path / "back", "f32", progress=False)
    transformers = pytest.importorskip("transformers")
    with torch.no_grad():
        again = transformers.AutoModelForCausalLM.from_pretrained(back).eval()(torch.tensor([ids])).logits[0].numpy()
    for got in (again, _logits(load(back), ids)):
        assert np.abs(got - theirs).max() < 1e-4 * np.abs(theirs).max()


def _tiny_llama(transformers, torch, folder, **config):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, **config})).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(folder)
    return model


def test_biases_and_llama3_rope_survive_both_directions(tmp_path):
    """Every bias (q/k/v/o and the MLP's) goes to the GGUF and back, and a GGUF's rope_freqs become the
    "llama3" rope_scaling they were computed from, so transformers reads the directory right."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref = _tiny_llama(transformers, torch, tmp_path / "hf", attention_bias=True, mlp_bias=True,
                      max_position_embeddings=256, rope_scaling={
                          "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64})
    with pytest.warns(UserWarning, match="no tokenizer.json"):
        gguf = quantize_checkpoint(tmp_path / "hf", tmp_path / "m.gguf", "f32", progress=False)
    assert "blk.0.ffn_up.bias" in tio.load_gguf(gguf).tensors and "rope_freqs.weight" in tio.load_gguf(gguf).tensors
    back = quantize_checkpoint(gguf, tmp_path / "back", "f32", progress=False)
    scaling = json.loads((back / "config.json").read_text())["rope_scaling"]
    assert scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 64}
    ids = np.random.default_rng(0).integers(0, VOCAB, 200).tolist()  # past 64: where the scaling matters
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].numpy()
        theirs = transformers.AutoModelForCausalLM.from_pretrained(back).eval()(torch.tensor([ids])).logits[0].numpy()
    for got in (_logits(load(gguf), ids), _logits(load(back), ids), theirs):
        assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


def test_a_sliding_window_is_written_with_a_warning_that_llama_cpp_ignores_it(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ref = transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=8, max_position_embeddings=128)).eval()
    ref.save_pretrained(tmp_path / "hf")
    with pytest.warns(UserWarning, match=r"attention window \(8 tokens\) is written.*llama.cpp's llama and qwen2"):
        gguf = quantize_checkpoint(tmp_path / "hf", tmp_path / "m.gguf", "f32", progress=False)
    assert tio.load_gguf(gguf).metadata["llama.attention.sliding_window"] == 8
    ids = np.random.default_rng(0).integers(0, VOCAB, 40).tolist()  # past the window
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(_logits(load(gguf), ids) - want).max() < 1e-4 * np.abs(want).max()


def test_bos_and_eos_ids_from_config_json(tmp_path):
    """A tokenizer.json that adds a BOS it does not name (no tokenizer_config.json): the id comes from
    config.json, as llama.cpp's converter takes it (gguf-py's SpecialVocab)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers import models as tokenizer_models

    _tiny_llama(transformers, torch, tmp_path / "hf", vocab_size=320, bos_token_id=0, eos_token_id=1)
    tok = Tokenizer(tokenizer_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 3, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|begin|>", "<|end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<|begin|> $A", special_tokens=[("<|begin|>", 0)])
    tok.save(str(tmp_path / "hf" / "tokenizer.json"))
    meta = tio.load_gguf(quantize_checkpoint(tmp_path / "hf", tmp_path / "m.gguf", "q8_0", progress=False)).metadata
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (0, 1)
    assert meta["tokenizer.ggml.add_bos_token"] is True


def test_a_bert_checkpoint_without_pooler_loads_and_converts(tmp_path):
    """BertForMaskedLM saves no pooler (transformers builds it with add_pooling_layer=False; config.json does
    not say so): its encoder loads and goes to GGUF, with the hidden states transformers computes."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ref = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=96)).eval()
    ref.save_pretrained(tmp_path / "mlm")
    ids = np.array([[2, 7, 9, 33, 3]])
    with torch.no_grad():
        want = ref.bert(torch.tensor(ids)).last_hidden_state[0].numpy()
    with pytest.warns(UserWarning, match="no tokenizer.json"):
        gguf = quantize_checkpoint(tmp_path / "mlm", tmp_path / "mlm.gguf", "f32", progress=False)
    for model in (load(tmp_path / "mlm"), load(gguf)):
        assert model.pooler is None
        with no_grad():
            np.testing.assert_allclose(model(ids)[0].numpy()[0], want, atol=1e-5)


def test_tables_added_to_the_hidden_states_stay_dense(hf_models, minilm_path, tmp_path):
    """llama.cpp's quantizer leaves position_embd and token_types alone: ggml cannot add a quantized tensor
    (llama.cpp aborts on a BERT file whose position table is Q8_0)."""
    gpt2 = tio.load_gguf(quantize_checkpoint(hf_models["gpt2"][0], tmp_path / "gpt2.gguf", "q8_0", progress=False))
    bert = tio.load_gguf(quantize_checkpoint(minilm_path, tmp_path / "bert.gguf", "q8_0", progress=False))
    for f, kept in ((gpt2, ["position_embd.weight"]), (bert, ["position_embd.weight", "token_types.weight"])):
        assert [name for name in kept if isinstance(f.tensors[name], QuantizedTensor)] == []
        assert isinstance(f.tensors["token_embd.weight"], QuantizedTensor)
        assert isinstance(f.tensors["blk.0.ffn_up.weight"], QuantizedTensor)
    again = tio.load_gguf(quantize_checkpoint(bert.path, tmp_path / "again.gguf", "q4_0", progress=False))
    assert not isinstance(again.tensors["token_types.weight"], QuantizedTensor)  # GGUF -> GGUF too


def test_bert_directory_to_gguf_is_the_converter_file_and_embeds_the_same(minilm_path, tmp_path):
    from bert_gguf import write_bert_gguf

    ours = tio.load_gguf(quantize_checkpoint(minilm_path, tmp_path / "minilm.gguf", "f32", progress=False))
    ref = tio.load_gguf(write_bert_gguf(minilm_path, tmp_path / "ref.gguf"))
    assert set(ours.tensors) == set(ref.tensors)
    for name, t in ref.tensors.items():
        np.testing.assert_array_equal(ours.tensors[name].numpy(), t.numpy(), err_msg=name)
    for key, value in ref.metadata.items():
        if key.startswith(("tokenizer.", "bert.")):
            theirs = ours.metadata[key]
            assert (list(theirs) == list(value)) if isinstance(value, (list, np.ndarray)) else theirs == value, key
    texts = ["A man is eating food.", "Tensora reads the same file!"]
    want = load(minilm_path).embed(texts)
    assert (load(ours.path).embed(texts) * want).sum(1).min() > 1 - 1e-6
    back = load(quantize_checkpoint(ours.path, tmp_path / "int8", "int8", progress=False))  # and GGUF -> directory
    assert back.pooler is None and (back.embed(texts) * want).sum(1).min() > 0.999  # measured 0.9995


def test_a_sentencepiece_directory_gets_the_llama_cpp_vocabulary_it_came_from(tmp_path):
    """transformers turns a "llama" GGUF vocabulary into its own Llama tokenizer.json (merges ranked by
    score, a Metaspace pre-tokenizer); written back, it is the vocabulary it came from: same tokens and
    types, scores that merge in the same order, and llama.cpp's space rules."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from models.test_tokenizer_gguf import SPM_TEXTS, SPM_TOKENS, spm_gguf

    original = spm_gguf(tmp_path / "spm.gguf")
    transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf").save_pretrained(tmp_path / "hf")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(SPM_TOKENS), hidden_size=64, intermediate_size=96,
                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    out = quantize_checkpoint(tmp_path / "hf", tmp_path / "out.gguf", "q8_0", progress=False)
    ours, theirs = tio.load_gguf(out).metadata, tio.load_gguf(original).metadata
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.chat_template"):
        value = theirs[key]
        assert (list(ours[key]) == list(value)) if isinstance(value, (list, np.ndarray)) else ours[key] == value, key
    assert ours["tokenizer.ggml.add_space_prefix"] and ours["tokenizer.ggml.add_bos_token"]
    written, source = load_tokenizer(out), load_tokenizer(original)
    for text in SPM_TEXTS + [" ab", "ab</s>the", "the  abc abab"]:
        assert written.encode(text) == source.encode(text), text


# -- what cannot be written ------------------------------------------------------------------------

def _with_tokenizer(hf_models, tmp_path, tokenizer) -> str:
    folder = tmp_path / "src"
    shutil.copytree(hf_models["llama"][0], folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_a_vocabulary_gguf_cannot_reproduce_is_refused(hf_models, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    unigram = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], unk_id=0))
    with pytest.raises(ConversionError, match="a Unigram tokenizer cannot be written as a GGUF vocabulary"):
        quantize_checkpoint(_with_tokenizer(hf_models, tmp_path / "a", unigram), tmp_path / "a.gguf", "q8_0")
    # byte-level BPE that drops the spaces between words: no llama.cpp split recipe does that
    bpe = Tokenizer(models.BPE({c: i for i, c in enumerate([chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"])}, []))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    with pytest.raises(ConversionError, match="llama.cpp would tokenize it differently"):
        quantize_checkpoint(_with_tokenizer(hf_models, tmp_path / "b", bpe), tmp_path / "b.gguf", "q8_0")


def test_a_gguf_without_hyperparameters_names_the_missing_key(tmp_path):
    path = tio.save_gguf(tmp_path / "bare.gguf", {"token_embd.weight": np.ones((4, 8), np.float32)}, arch="llama")
    with pytest.raises(FormatError, match="llama.attention.head_count"):
        quantize_checkpoint(path, tmp_path / "out", "nf4")


def test_cli_quantize_between_the_two_kinds(hf_models, tmp_path, capsys):
    src = hf_models["qwen2"][0]
    assert main(["quantize", str(src), str(tmp_path / "q.gguf"), "--format", "q8_0"]) == 0
    err = capsys.readouterr().err  # no tokenizer.json: the warning, on one line as the CLI's errors are
    assert "tensora quantize: warning: " in err and "has no tokenizer.json" in err and "UserWarning" not in err
    assert main(["quantize", str(tmp_path / "q.gguf"), str(tmp_path / "nf4"), "--format", "nf4"]) == 0
    assert "wrote" in capsys.readouterr().out
    config = json.loads((tmp_path / "nf4" / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["num_key_value_heads"] == 2
    ids = [1, 5, 9, 17]
    a, b = _logits(load(tmp_path / "nf4"), ids), _logits(load(src), ids)
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.3 * np.sqrt(np.mean(b ** 2))  # q8_0 then nf4: measured 0.21
