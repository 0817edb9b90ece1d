"""Prompt building: token-measured prefix/suffix windows, FIM layout and token healing."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from models.fim import FimTemplate
from models.tokenizer import Tokenizer

LINE_QUANTUM = 32
"""The prefix window starts on a line whose number is a multiple of this, so that it moves
in jumps rather than with every keystroke: a stable window start is what lets the KV cache
of the previous request be reused."""

MAX_HEAL_TOKENS = 4
# What a cursor may sit inside: an identifier, or indentation (with the newline before it,
# since byte-level BPE merges "\n" with the spaces that follow).
_TRAILING_RUN = re.compile(r"(?:\w+|\n?[ \t]+)\Z")


@dataclass(frozen=True)
class Prompt:
    """Token ids for the model plus the text the first generated tokens must reproduce."""

    ids: list[int]
    heal: str  # removed from the end of the prefix; the draft's first tokens re-create it
    prefix: str  # document text before the cursor
    suffix: str  # document text after the cursor
    window_start: int  # character offset in the document where the prefix window begins
    fim: bool


def _line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer("\n", text)]


MAX_CHARS_PER_TOKEN = 16
"""No token is longer than this on average over a window, so a prefix tail of
`budget * MAX_CHARS_PER_TOKEN` characters always holds a full window."""


def _region_start(prefix: str, budget: int) -> int:
    """Offset of a quantized line start leaving at least budget * 16 characters, or 0."""
    need = budget * MAX_CHARS_PER_TOKEN
    if len(prefix) <= 2 * need:
        return 0
    starts = _line_starts(prefix[: len(prefix) - need])[::LINE_QUANTUM]
    return starts[-1] if len(starts) > 1 else 0


def prefix_window(tok: Tokenizer, prefix: str, budget: int) -> tuple[int, list[int], list[tuple[int, int]]]:
    """Start offset, ids and offsets of the prefix window (at most `budget` tokens)."""
    region = _region_start(prefix, budget)
    if region:
        # A huge prefix: tokenize only a generous tail of it, starting on a quantized line.
        start, ids, offs = prefix_window(tok, prefix[region:], budget)
        return region + start, ids, offs
    ids, offs = tok.encode_offsets(prefix)
    if len(ids) <= budget:
        return 0, ids, offs
    all_starts = _line_starts(prefix)
    # Token starts give a close estimate of how many tokens each candidate start leaves.
    tok_starts = [s for s, _ in offs]
    # Coarse line quanta first; finer ones only when a coarse step is over the budget.
    for quantum in (LINE_QUANTUM, LINE_QUANTUM // 4, 1):
        starts = all_starts[::quantum]
        first = max(bisect.bisect_left(starts, tok_starts[len(ids) - budget]), 0)
        for start in starts[first : first + 2]:
            w_ids, w_offs = tok.encode_offsets(prefix[start:])
            # A coarse step may overshoot and leave most of the budget unused: go finer.
            if len(w_ids) <= budget and (2 * len(w_ids) >= budget or quantum == 1):
                return start, w_ids, w_offs
    # Even one line is over budget (minified code, huge lines): cut at a token.
    start = tok_starts[len(ids) - budget]
    w_ids, w_offs = tok.encode_offsets(prefix[start:])
    return start, w_ids[-budget:], w_offs[-budget:]


def heal_cut(window: str, ids: list[int], offs: list[tuple[int, int]]) -> int:
    """Index of the first token to back off so that the prompt ends on a clean boundary."""
    if not ids:
        return 0
    run = _TRAILING_RUN.search(window)
    cut = run.start() if run else len(window)
    j = len(ids) - 1  # always back off the last token: it may merge with what comes next
    while j > 0 and offs[j - 1][1] > cut and len(ids) - j < MAX_HEAL_TOKENS:
        j -= 1
    # Never split a character: byte-level pieces of one character share its offsets.
    while j > 0 and offs[j - 1][0] == offs[j][0]:
        j -= 1
    return j


def build_prompt(
    tok: Tokenizer,
    text: str,
    offset: int,
    context_tokens: int,
    fim: FimTemplate | None = None,
    heal: bool = True,
) -> Prompt:
    """Prompt for completing `text` at character `offset`."""
    offset = max(0, min(offset, len(text)))
    prefix, suffix = text[:offset], text[offset:]
    lead = fim.prefix_lead if fim else ""  # CodeLlama wants a space before the prefix
    start, ids, offs = prefix_window(tok, lead + prefix, context_tokens)
    window = (lead + prefix)[start:]
    j = heal_cut(window, ids, offs) if heal else len(ids)
    heal_text = window[offs[j][0] :] if j < len(ids) else ""
    if fim is not None:
        suf_budget = max(context_tokens // 4, 16)
        suf_ids = tok.encode(suffix[: suf_budget * 8])[:suf_budget]
        prompt_ids = fim.build(tok, ids[:j], suf_ids)
    else:
        # A document-start token at the top of a file tells the model where code begins,
        # and keeps the prompt non-empty when healing backs off all of a short prefix.
        head = tok.prefix_ids or ([tok.doc_start_id] if tok.doc_start_id is not None and start == 0 else [])
        prompt_ids = [*head, *ids[:j]]
        if not prompt_ids:
            prompt_ids, heal_text = ids, ""
    if not prompt_ids:
        raise ValueError("nothing to prompt the model with")
    return Prompt(prompt_ids, heal_text, prefix, suffix, max(0, start - len(lead)), fim is not None)
