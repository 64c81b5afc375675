"""Streaming text of a generation (tensora/models/generation.py's _Row) against decoding all
tokens at once: byte tokens (token i is byte i), so characters split over tokens; and the
sampler under extreme options."""

from __future__ import annotations

import numpy as np
import pytest

from tensora.models.generation import SamplingOptions, _Row, sample
from tensora.models.tokenizer import StreamDecoder


class ByteTokenizer:
    """Token i is byte i; counts the ids it decodes, to see the work per token stay bounded."""

    def __init__(self) -> None:
        self.decoded = 0

    def decode(self, ids, skip_special_tokens=False):
        self.decoded += len(ids)
        return bytes(ids).decode("utf-8", errors="replace")


def _run(text: str, stop=(), final_reason="length"):
    tok = ByteTokenizer()
    row = _Row([0], StreamDecoder(tok, skip_special_tokens=True), tuple(stop))
    deltas = []
    for b in text.encode():
        row.add(b, stop_ids=set())
        deltas.append(row.pending_text(final=False))
        if row.finish_reason is not None:
            break
    if row.finish_reason is None:
        row.end(final_reason)
    deltas.append(row.pending_text(final=True))
    return row, deltas, tok


def test_text_grows_by_whole_characters_and_equals_decoding_everything():
    text = "héllo 🌊 wörld, 東京 " * 40
    row, deltas, tok = _run(text)
    assert row.text == "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    n = len(text.encode())
    assert tok.decoded < 8 * n  # a bounded window per token; decoding everything again was ~n * n / 2


def test_stop_string_across_deltas_and_unfinished_last_character():
    row, deltas, _ = _run("once upon a 🌊 time END and more", stop=["🌊 time E"])
    assert row.finish_reason == "stop" and row.text == "".join(deltas) == "once upon a "
    cut = "abc 🌊".encode()[:-1].decode("utf-8", errors="ignore")  # what is whole before the split emoji
    row = _Row([0], StreamDecoder(ByteTokenizer(), skip_special_tokens=True), ())
    for b in "abc 🌊".encode()[:-1]:
        row.add(b, stop_ids=set())
    assert row.pending_text(final=False) == cut
    row.end("length")  # the generation ends inside a character: it comes out as U+FFFD, as decode() gives
    assert row.text == "abc 🌊".encode()[:-1].decode("utf-8", errors="replace") and row.pending_text(True) == "\ufffd"


@pytest.mark.parametrize("penalty", [1e-300, 1e-310, 5e-324])
def test_tiny_repetition_penalty_samples_instead_of_nan(penalty):
    """A seen token's positive logit over a subnormal penalty is inf; two such infs once made
    the shifted logits nan, and the sampler raised (a server answered 500 on that row)."""
    logits = np.array([3.0, 2.0, -1.0, 0.5, 4.0])
    o = SamplingOptions(temperature=1.0, repetition_penalty=penalty)
    picks = {sample(logits.copy(), o, np.random.default_rng(s), seen=[0, 1, 2]) for s in range(20)}
    assert picks and picks <= {0, 1}  # the two boosted ones share the top; the others have no chance
