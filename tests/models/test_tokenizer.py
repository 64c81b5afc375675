"""Tokenizer on the real models against transformers: SmolLM2's GGUF (byte-level BPE, chat template)
and all-MiniLM-L6-v2's Hugging Face folder (WordPiece); streaming decode; load errors."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensora.errors import TensoraError
from tensora.models import Tokenizer, load_tokenizer
from tensora.models.tokenizer import TokenizerError


TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we're late!",
    "  leading spaces,   runs of   spaces\n\n\n\ttabs\t\tand trailing   ",
    "def f(x):\n    return {'a': x ** 2}  # comment\n\nclass A(B):\n\tpass\r\n",
    "12345 3.14159 1,000,000 -42 0x1F 2024-01-01 1e-9",
    "emoji 😀🎉👍🏽 family 👨\u200d👩\u200d👧 flags 🇫🇷",
    "中文测试，日本語のテキスト、한국어 텍스트",
    "café naïve résumé Ångström Straße ŒUVRE",
    "I'm you're they'll DON'T I'VE",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "a<|endoftext|>b <|im_end|>",
    "",
    " ",
    "\n",
    "multi\n\nline\n\n\n\nbreaks",
    "Ünïcödé ∑∫√ — “quotes” ‘single’ … €100 ¥500",
]

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "émoji 😀 and <b>html</b> & \"quotes\""}],
]


# -- SmolLM2 (GGUF, gpt2 BPE with the "smollm" pre-tokenizer) vs transformers -------------------

@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_smollm2_encode_matches_transformers(smollm2, smollm2_ref, add_special_tokens):
    for text in TEXTS:
        assert smollm2.encode(text, add_special_tokens) == smollm2_ref.encode(text, add_special_tokens=add_special_tokens), text


@pytest.mark.parametrize("skip", [False, True])
def test_smollm2_decode_matches_transformers(smollm2, smollm2_ref, skip):
    for text in TEXTS:
        ids = smollm2_ref.encode(text)
        assert smollm2.decode(ids, skip_special_tokens=skip) == smollm2_ref.decode(ids, skip_special_tokens=skip)


def test_smollm2_splits_digits_like_llama_cpp(smollm2):
    """llama.cpp's "smollm" pre-tokenizer isolates every digit before the GPT-2 split."""
    pieces = [smollm2.backend.id_to_token(i) for i in smollm2.encode("x 2024", add_special_tokens=False)]
    assert pieces == ["x", "Ġ", "2", "0", "2", "4"]


def test_smollm2_special_ids(smollm2, smollm2_ref):
    assert smollm2.bos_token_id == smollm2_ref.bos_token_id == 1
    assert smollm2.pad_token_id == smollm2_ref.pad_token_id == 2
    assert smollm2.vocab_size == len(smollm2_ref) == 49152
    # llama.cpp's end-of-generation set: eos <|im_end|>, <|endoftext|>, and <reponame> (its FIM repo token)
    assert smollm2.eos_token_ids == [0, 2, 4]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_chat_template_matches_transformers(smollm2, smollm2_ref, messages, add_generation_prompt):
    text = smollm2.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert text == smollm2_ref.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                   tokenize=False)
    ids = smollm2.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    assert ids == smollm2_ref.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  tokenize=True, return_dict=False)


TEMPLATE = (
    "{%- set ns = namespace(count=0) -%}\n"
    "{%- for m in messages %}\n"
    "  {%- set ns.count = ns.count + 1 %}\n"
    "  {% generation %}{{ m | tojson }}{% endgeneration %}\n"
    "{% endfor -%}\n"
    "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ ns.count }}|{{ extra_var }}|{{ tools | tojson }}|"
    "{{ strftime_now('%Y') | length }}|{{ dict(a=1) | tojson }}{{ dict.fromkeys(['k'], 0) | tojson }}\n"
    "{%- if add_generation_prompt %}<gen>{% endif %}"
    "{%- if messages | length > 3 %}{{ raise_exception('at most three messages') }}{% endif %}"
)


def test_template_environment_matches_transformers(smollm2, smollm2_ref):
    """namespace, {% generation %}, a tojson that keeps <, > and non-ASCII, trim/lstrip_blocks, extra variables."""
    messages = [{"role": "user", "content": "<b>é</b> & \"q\"", "name": None}, {"role": "assistant", "content": "ok"}]
    tok = Tokenizer(smollm2.backend, special_ids=smollm2.special_ids, chat_template=TEMPLATE)
    tools = [{"name": "f", "parameters": {}}]
    got = tok.apply_chat_template(messages, tools=tools, extra_var=7)
    want = smollm2_ref.apply_chat_template(messages, chat_template=TEMPLATE, tools=tools, extra_var=7,
                                           add_generation_prompt=True, tokenize=False)
    assert got == want
    assert 'null' not in got  # None-valued message keys are dropped, as transformers does


def test_template_raise_exception_is_a_template_error(smollm2):
    import jinja2

    tok = Tokenizer(smollm2.backend, special_ids=smollm2.special_ids, chat_template=TEMPLATE)
    with pytest.raises(jinja2.TemplateError, match="at most three messages") as info:
        tok.apply_chat_template([{"role": "user", "content": "x"}] * 4)
    assert isinstance(info.value, TensoraError)


def test_template_sandbox_refuses_underscore_attributes(smollm2):
    import jinja2

    tok = Tokenizer(smollm2.backend, chat_template="{% set ns = namespace(_x=1) %}{{ ns._x }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        tok.apply_chat_template([])


def test_no_chat_template_is_a_clear_error(smollm2):
    with pytest.raises(TokenizerError, match="no chat template"):
        Tokenizer(smollm2.backend).apply_chat_template([{"role": "user", "content": "x"}])


# -- streaming decode ------------------------------------------------------------------------------

def _streamed(tok, ids, skip=False):
    stream = tok.stream(skip_special_tokens=skip)
    pieces = [stream.push(i) for i in ids]
    return pieces, stream.flush()


@pytest.mark.parametrize("skip", [False, True])
def test_stream_every_prefix_concatenates_to_decode(smollm2, skip):
    """Reference: decode(ids[:k]) for every k, byte-level tokens splitting multi-byte characters included."""
    for text in TEXTS:
        ids = smollm2.encode(text)
        for k in range(len(ids) + 1):
            pieces, rest = _streamed(smollm2, ids[:k], skip)
            assert "".join(pieces) + rest == smollm2.decode(ids[:k], skip_special_tokens=skip), (text, k)
            assert not any("\ufffd" in p for p in pieces), (text, k)


def test_stream_holds_back_partial_characters(smollm2):
    ids = smollm2.encode("😀", add_special_tokens=False)
    assert len(ids) > 1  # the emoji's four bytes span several byte-level tokens
    pieces, rest = _streamed(smollm2, ids)
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "😀" and rest == ""
    pieces, rest = _streamed(smollm2, ids[:1])
    assert pieces == [""] and rest == "\ufffd"  # flush releases an unfinished character as U+FFFD


# SmolLM2's vocabulary has no token for the bytes 0x04 0x06 0x13 0x14 0x16 0x1D (control characters) nor
# for the UTF-8 lead bytes 0xF1-0xF2 (planes 4-11, unassigned): llama.cpp and transformers drop those bytes.
SPELLABLE = st.characters(max_codepoint=0x3FFFF, exclude_categories=("Cs",), exclude_characters="\x04\x06\x13\x14\x16\x1d")


@settings(max_examples=150, deadline=None)
@given(st.text(SPELLABLE, max_size=40))
def test_random_text_round_trips(smollm2, text):
    """Byte-level BPE is lossless: decode(encode(s)) == s, and the stream yields s without U+FFFD."""
    ids = smollm2.encode(text, add_special_tokens=False)
    assert smollm2.decode(ids) == text
    pieces, rest = _streamed(smollm2, ids)
    assert "".join(pieces) + rest == text
    assert not any("\ufffd" in p for p in pieces) or "\ufffd" in text


# -- all-MiniLM-L6-v2 (Hugging Face folder, WordPiece) vs transformers --------------------------

def test_minilm_matches_transformers(minilm_path):
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(minilm_path)
    tok = load_tokenizer(minilm_path)
    texts = TEXTS + ["[CLS] a [SEP] b [MASK] c", "unaffable supercalifragilistic", "x" * 150]
    for text in texts:
        ids = tok.encode(text)
        assert ids == ref.encode(text), text
        assert tok.encode(text, add_special_tokens=False) == ref.encode(text, add_special_tokens=False), text
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), text
    assert tok.pad_token_id == ref.pad_token_id == 0
    assert tok.bos_token_id is None and tok.eos_token_ids == [] and tok.chat_template is None
    assert tok.vocab_size == len(ref)


def test_hf_folder_reads_generation_config_and_bos_flags(tmp_path, minilm_path):
    """generation_config.json's eos ids end generation; add_bos_token/add_eos_token rebuild the framing."""
    for name in ("tokenizer.json", "vocab.txt"):
        (tmp_path / name).write_bytes(open(os.path.join(minilm_path, name), "rb").read())
    (tmp_path / "tokenizer_config.json").write_text(
        '{"bos_token": "[CLS]", "eos_token": {"content": "[SEP]"}, "add_bos_token": true, "add_eos_token": false,'
        ' "chat_template": [{"name": "default", "template": "{{ messages[0].content }}"}]}')
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [102, 103]}')
    tok = load_tokenizer(tmp_path)
    assert tok.eos_token_ids == [102, 103]
    assert tok.encode("hello") == [101, 7592]
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "hi"


# -- bad input -----------------------------------------------------------------------------------

def test_load_errors_are_clear(tmp_path):
    with pytest.raises(TokenizerError, match="no such file"):
        load_tokenizer(tmp_path / "missing.gguf")
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="neither"):
        load_tokenizer(tmp_path / "x.bin")
