"""LSP positions (line, character in UTF-16/UTF-8/UTF-32 units) <-> string offsets."""

from __future__ import annotations

from typing import Literal

Encoding = Literal["utf-16", "utf-8", "utf-32"]


def _units(ch: str, encoding: Encoding) -> int:
    if encoding == "utf-32":
        return 1
    if encoding == "utf-16":
        return 2 if ord(ch) > 0xFFFF else 1
    return len(ch.encode("utf-8", errors="surrogatepass"))


def line_starts(text: str) -> list[int]:
    """Offsets where each line begins; \\n, \\r\\n and \\r all end a line, as in LSP."""
    starts = [0]
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\r" and i + 1 < n and text[i + 1] == "\n":
            i += 1
        if ch in "\r\n":
            starts.append(i + 1)
        i += 1
    return starts


def to_offset(text: str, line: int, character: int, encoding: Encoding = "utf-16") -> int:
    """String offset of a position; past the end of a line or the document clamps to it."""
    starts = line_starts(text)
    if line < 0:
        return 0
    if line >= len(starts):
        return len(text)
    start = starts[line]
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    while end > start and text[end - 1] in "\r\n":
        end -= 1
    units = 0
    for i in range(start, end):
        if units >= character:
            return i
        units += _units(text[i], encoding)
    return end


def to_position(text: str, offset: int, encoding: Encoding = "utf-16") -> tuple[int, int]:
    """(line, character) of a string offset."""
    offset = max(0, min(offset, len(text)))
    starts = line_starts(text)
    lo, hi = 0, len(starts) - 1
    while lo < hi:  # last line start <= offset
        mid = (lo + hi + 1) // 2
        if starts[mid] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo, sum(_units(ch, encoding) for ch in text[starts[lo] : offset])
