"""parse_size / format_size against the IEC and SI definitions."""

from __future__ import annotations

import pytest

from tensora.memory import format_size, parse_size


@pytest.mark.parametrize("text, expected", [
    ("512MiB", 512 * 2**20), ("2GB", 2 * 10**9), ("1.5 GiB", 3 * 2**29), ("64kib", 64 * 1024), ("10", 10),
    ("7B", 7), ("3TB", 3 * 10**12), (1234, 1234), (0, 0)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["2G", "12 apples", "", "-5MiB", "MiB"])
def test_parse_size_refuses_ambiguous_or_malformed(bad):
    with pytest.raises(ValueError, match="cannot read"):
        parse_size(bad)


def test_parse_size_types():
    with pytest.raises(ValueError):
        parse_size(-1)
    with pytest.raises(TypeError):
        parse_size(1.5)
    with pytest.raises(TypeError):
        parse_size(True)


def test_format_size():
    assert format_size(512 * 2**20) == "512.0 MiB"
    assert format_size(1000) == "1000 B"
    assert format_size(3 * 2**29) == "1.5 GiB"
