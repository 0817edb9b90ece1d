"""LSP positions (line, character in UTF-16/UTF-8/UTF-32 units) <-> string offsets."""

from __future__ import annotations

import re
from typing import Literal

Encoding = Literal["utf-16", "utf-8", "utf-32"]


def _units(ch: str, encoding: Encoding) -> int:
    if encoding == "utf-32":
        return 1
    if encoding == "utf-16":
        return 2 if ord(ch) > 0xFFFF else 1
    return len(ch.encode("utf-8", errors="surrogatepass"))


def encoding_of(kind: object) -> Encoding:
    """The Encoding named by a negotiated position encoding (a PositionEncodingKind or a
    plain string); UTF-16, LSP's default, for anything else."""
    name = str(getattr(kind, "value", kind) or "utf-16").lower()
    return name if name in ("utf-8", "utf-16", "utf-32") else "utf-16"  # type: ignore[return-value]


_NEWLINE = re.compile(r"\r\n|\r|\n")


def line_starts(text: str) -> list[int]:
    """Offsets where each line begins; \\n, \\r\\n and \\r all end a line, as in LSP."""
    return [0] + [m.end() for m in _NEWLINE.finditer(text)]


def _line_span(text: str, line: int) -> tuple[int, int] | None:
    """(start, end) of a line without its line break, or None past the last line; stops scanning there."""
    start, n = 0, 0
    for n, m in enumerate(_NEWLINE.finditer(text), 1):
        if n - 1 == line:
            return start, m.start()
        start = m.end()
    return (start, len(text)) if line == n else None


def to_offset(text: str, line: int, character: int, encoding: Encoding = "utf-16") -> int:
    """String offset of a position; past the end of a line or the document clamps to it."""
    if line < 0:
        return 0
    span = _line_span(text, line)
    if span is None:
        return len(text)
    start, end = span
    if encoding == "utf-32" or (encoding == "utf-16" and text.isascii()):
        return min(start + max(character, 0), end)
    units = 0
    for i in range(start, end):
        if units >= character:
            return i
        units += _units(text[i], encoding)
    return end


def to_position(text: str, offset: int, encoding: Encoding = "utf-16") -> tuple[int, int]:
    """(line, character) of a string offset."""
    offset = max(0, min(offset, len(text)))
    head = text[:offset]
    line = len(_NEWLINE.findall(head))
    if head.endswith("\r") and text[offset : offset + 1] == "\n":
        line -= 1  # between \r and \n of one line break: still on the line it ends
    start = 0
    if line:
        start = max(head.rfind("\n"), head.rfind("\r")) + 1
        if head.endswith("\r") and text[offset : offset + 1] == "\n":
            start = max(head[:-1].rfind("\n"), head[:-1].rfind("\r")) + 1
    seg = text[start:offset]
    if encoding == "utf-32" or seg.isascii():
        return line, len(seg)
    return line, sum(_units(ch, encoding) for ch in seg)
