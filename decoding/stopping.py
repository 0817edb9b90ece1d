"""Stopping rules: where a draft ends (line, block, suffix overlap) and how it is trimmed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal


# A dot right after a name, a call or a subscript, ending the text (not `...`).
_DANGLING_DOT = re.compile(r"[\w)\]]\.\Z")


def indent_width(line: str) -> int:
    """Columns of leading whitespace (a tab counts as 8, as Python's tokenizer does)."""
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width = (width // 8 + 1) * 8
        else:
            break
    return width


def resolve_mode(mode: str, line_prefix: str) -> Literal["line", "block"]:
    """`auto` is block mode on a blank line or after a block opener, line mode elsewhere."""
    if mode in ("line", "block"):
        return mode  # type: ignore[return-value]
    stripped = line_prefix.rstrip()
    return "block" if not stripped or stripped.endswith(":") else "line"


@dataclass(frozen=True)
class StopRules:
    """Per-request stopping rules over the draft text (the text inserted at the cursor)."""

    mode: Literal["line", "block"]
    line_prefix: str  # the cursor line's text before the cursor
    suffix: str  # the document after the cursor

    @property
    def _line_suffix(self) -> str:
        return self.suffix.split("\n", 1)[0]

    @property
    def _next_line(self) -> str:
        """First non-blank line after the cursor line, stripped."""
        for line in self.suffix.split("\n")[1:]:
            if line.strip():
                return line.strip()
        return ""

    def cut(self, text: str) -> int | None:
        """Length to keep if the draft must end now, or None to go on."""
        if self.mode == "line":
            nl = text.find("\n")
            return None if nl < 0 else nl
        lines = text.split("\n")
        blank_cursor_line = not self.line_prefix.strip()
        base = indent_width(self.line_prefix if blank_cursor_line else self.line_prefix + lines[0])
        pos = len(lines[0]) + 1
        deeper = False
        next_line = self._next_line
        # Only whole lines are judged: the last element may still be growing.
        for line in lines[1:-1]:
            if line.strip():
                width = indent_width(line)
                closes = width < base if blank_cursor_line else width <= base
                # On a blank line, one compound statement is one suggestion: stop when the
                # block it opened has closed.
                if closes or (blank_cursor_line and deeper and width == base):
                    return pos - 1
                if next_line and line.strip() == next_line:
                    return pos - 1  # the model is re-typing the code below the cursor
                deeper = deeper or width > base
            pos += len(line) + 1
        return None

    def finish(self, text: str, complete: bool = True) -> str:
        """Final trim: the stopping cut, trailing blank lines, and overlap with the suffix.

        A draft cut short by a budget (`complete=False`) loses its unfinished last line in
        block mode, where earlier whole lines make a better suggestion than half a line, and
        a dot it ends on (`items[2].`): an attribute access with no attribute in it is never
        worth accepting, while what comes before it may be.
        """
        if not complete and self.mode == "block" and "\n" in text.rstrip():
            text = text[: text.rstrip().rfind("\n")]
        keep = self.cut(text + "\n")  # the last line is complete now
        if keep is not None:
            text = text[:keep]
        text = text.rstrip()
        if not complete and _DANGLING_DOT.search(text):
            text = text[:-1]
        if self.mode == "line" or "\n" not in text:
            text = trim_overlap(text, self._line_suffix)
        return text


def trim_overlap(text: str, line_suffix: str) -> str:
    """Drop the end of text that repeats the start of the rest of the line (`x)` before `)`)."""
    rest = line_suffix.rstrip()
    if not rest.strip():
        return text
    for k in range(min(len(rest), len(text)), 0, -1):
        if text.endswith(rest[:k]):
            return text[: len(text) - k]
    return text
