"""LSP (line, character) positions <-> Python string offsets, in UTF-16, UTF-8 and UTF-32 units."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp.positions import line_starts, to_offset, to_position

ENCODINGS = ("utf-16", "utf-8", "utf-32")


def test_ascii() -> None:
    """Plain ASCII: the character is the column, lines split at \\n."""
    text = "def f(x):\n    return x\n"
    assert to_offset(text, 0, 0) == 0
    assert to_offset(text, 0, 4) == 4 and text[4] == "f"
    assert to_offset(text, 1, 11) == text.index("x\n", 10)
    assert to_position(text, text.index("return")) == (1, 4)
    assert to_position(text, len(text)) == (2, 0)
    for enc in ENCODINGS:
        assert to_offset(text, 1, 4, enc) == 14 and to_position(text, 14, enc) == (1, 4)


@pytest.mark.parametrize(("encoding", "column"), [("utf-16", 4), ("utf-8", 6), ("utf-32", 3)])
def test_emoji_columns(encoding: str, column: int) -> None:
    """After 😀 (U+1F600) the next character is 2 UTF-16 units, 4 UTF-8 bytes or 1 code point further."""
    text = "x = 1\nab😀cd\n"
    c = text.index("c")
    assert to_offset(text, 1, column, encoding) == c  # type: ignore[arg-type]
    assert to_position(text, c, encoding) == (1, column)  # type: ignore[arg-type]
    assert to_offset(text, 1, column + 1, encoding) == c + 1  # type: ignore[arg-type]
    # The emoji itself starts at column 2 in every encoding.
    assert to_offset(text, 1, 2, encoding) == text.index("😀")  # type: ignore[arg-type]


def test_column_inside_a_surrogate_pair_never_splits_the_emoji() -> None:
    """UTF-16 column 3 falls inside 😀's surrogate pair; it maps to a whole code point boundary."""
    text = "ab😀cd"
    assert to_offset(text, 0, 3) in (2, 3)


def test_multibyte_utf8() -> None:
    """é is 2 UTF-8 bytes and 中 is 3, but 1 UTF-16 unit each."""
    text = "é中z"
    assert to_position(text, 2, "utf-8") == (0, 5) and to_position(text, 2, "utf-16") == (0, 2)
    assert to_offset(text, 0, 5, "utf-8") == 2 and to_offset(text, 0, 2, "utf-8") == 1
    assert to_offset(text, 0, 3, "utf-8") == 2  # inside 中's bytes: rounds to the next boundary


def test_crlf_and_lone_cr_end_lines() -> None:
    """\\r\\n, \\r and \\n each end one line, and \\r\\n is a single line break."""
    text = "a\nbb\r\nccc\rd"
    assert line_starts(text) == [0, 2, 6, 10]
    assert [to_offset(text, line, 0) for line in range(4)] == [0, 2, 6, 10]
    assert to_position(text, text.index("ccc") + 1) == (2, 1)
    assert to_position(text, text.index("d")) == (3, 0)
    assert line_starts("a\r\n") == [0, 3] and to_offset("a\r\n", 1, 0) == 3
    assert line_starts("\r\r\n\n") == [0, 1, 3, 4]


def test_past_the_line_end_clamps_to_that_line() -> None:
    """A character past the end stays on the line, before its line break (\\n, \\r\\n or \\r)."""
    text = "ab\ncd\r\nef\rgh"
    assert to_offset(text, 0, 99) == 2  # before "\n"
    assert to_offset(text, 1, 99) == 5  # before "\r\n", not between \r and \n
    assert to_offset(text, 2, 99) == 9  # before the lone "\r"
    assert to_offset(text, 3, 99) == len(text)
    assert to_offset(text, 1, 2) == 5  # exactly at the end of "cd"
    assert to_offset("\n\n", 0, 5) == 0  # an empty line


def test_past_the_document_clamps() -> None:
    """A line past the last one gives len(text); a negative line gives 0; offsets clamp too."""
    text = "ab\ncd"
    assert to_offset(text, 2, 0) == len(text) and to_offset(text, 100, 3) == len(text)
    assert to_offset(text, -1, 5) == 0
    assert to_position(text, 100) == (1, 2) and to_position(text, -5) == (0, 0)
    assert to_offset("", 0, 0) == 0 and to_position("", 0) == (0, 0)
    assert to_position("abcdefgh", -3) == (0, 0)  # not text[:-3]


PIECES = st.sampled_from(["a", "Z", " ", "é", "中", "😀", "𝔘", "\n", "\r\n", "\r", "\t"])
TEXTS = st.lists(PIECES, max_size=40).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, data=st.data(), encoding=st.sampled_from(ENCODINGS))
def test_offset_position_round_trip(text: str, data: st.DataObject, encoding: str) -> None:
    """to_offset(to_position(off)) == off for every offset not between the \\r and \\n of a CRLF."""
    offsets = [i for i in range(len(text) + 1) if not (0 < i < len(text) and text[i - 1 : i + 1] == "\r\n")]
    off = data.draw(st.sampled_from(offsets))
    line, character = to_position(text, off, encoding)  # type: ignore[arg-type]
    assert to_offset(text, line, character, encoding) == off  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, line=st.integers(0, 12), character=st.integers(0, 200), encoding=st.sampled_from(ENCODINGS))
def test_to_offset_stays_on_its_line(text: str, line: int, character: int, encoding: str) -> None:
    """Any character on an existing line maps to that line: the column, or the line's end if shorter."""
    off = to_offset(text, line, character, encoding)  # type: ignore[arg-type]
    assert 0 <= off <= len(text)
    assert not (0 < off < len(text) and text[off - 1 : off + 1] == "\r\n")  # never inside a CRLF
    if line < len(line_starts(text)):
        got_line, got_char = to_position(text, off, encoding)  # type: ignore[arg-type]
        end_char = to_position(text, to_offset(text, line, 10**9, encoding), encoding)[1]  # type: ignore[arg-type]
        assert got_line == line
        if character >= end_char:
            assert got_char == end_char
        else:  # exact, or rounded up out of a multi-unit character (at most 3 units more)
            assert character <= got_char < character + 4
