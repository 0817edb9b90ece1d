"""Prompt building: token windows that stay stable while typing, and token healing."""

from __future__ import annotations

import pytest

from decoding.prompt import LINE_QUANTUM, build_prompt, heal_cut
from models.loading import LoadedModel
from models.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tiny: LoadedModel) -> Tokenizer:
    return tiny.tokenizer


def _body(tok: Tokenizer, ids: list[int]) -> str:
    """Prompt text without the document-start token."""
    return tok.decode([i for i in ids if i != tok.doc_start_id])


@pytest.mark.parametrize(
    "prefix, heal",
    [
        ("import os\nresult = os.pa", "pa"),
        ("def f(url):\n    ", "\n    "),
        ("x = compute_the_total_val", "_val"),
        ("items = []\nitems.", "."),
        ("s = 'naïve café", " café"),
    ],
)
def test_healing_backs_off_to_a_clean_boundary(tok: Tokenizer, prefix: str, heal: str) -> None:
    p = build_prompt(tok, prefix, len(prefix), 512)
    assert p.heal.endswith(heal) or heal.endswith(p.heal)
    assert prefix.endswith(p.heal) and p.heal
    # The prompt plus the healed text is exactly the document before the cursor.
    assert _body(tok, p.ids) + p.heal == prefix


def test_heal_never_splits_a_character(tok: Tokenizer) -> None:
    prefix = "label = '🐍"  # the emoji is several byte-level pieces
    ids, offs = tok.encode_offsets(prefix)
    j = heal_cut(prefix, ids, offs)
    assert offs[j][0] == 0 or offs[j - 1][0] != offs[j][0]
    p = build_prompt(tok, prefix, len(prefix), 512)
    assert _body(tok, p.ids) + p.heal == prefix


def test_short_prefix_keeps_a_document_start(tok: Tokenizer) -> None:
    p = build_prompt(tok, "imp", 3, 512)
    assert p.ids == [tok.doc_start_id] and p.heal == "imp"
    assert build_prompt(tok, "", 0, 512).ids == [tok.doc_start_id]


def _long_file(n: int) -> str:
    return "".join(f"value_{i} = compute({i}, key='k{i}')\n" for i in range(n))


def test_prefix_window_fits_the_budget_and_starts_on_a_quantized_line(tok: Tokenizer) -> None:
    text = _long_file(400)
    p = build_prompt(tok, text, len(text), 1000)
    assert len(p.ids) <= 1000
    assert p.window_start > 0
    line = text[: p.window_start].count("\n")
    assert line % LINE_QUANTUM == 0 and text[p.window_start - 1] == "\n"
    assert text.endswith(_body(tok, p.ids) + p.heal)


def test_window_is_stable_while_typing(tok: Tokenizer) -> None:
    text = _long_file(400) + "total = "
    a = build_prompt(tok, text, len(text), 300)
    b = build_prompt(tok, text + "v", len(text) + 1, 300)
    assert a.window_start == b.window_start
    shared = next((i for i, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y), min(len(a.ids), len(b.ids)))
    assert shared >= len(a.ids) - 3  # only the last tokens change


def test_suffix_is_kept_for_stopping(tok: Tokenizer) -> None:
    text = "print(\n)\nx = 1\n"
    p = build_prompt(tok, text, 6, 512)
    assert p.prefix == "print(" and p.suffix == "\n)\nx = 1\n" and not p.fim


def test_huge_file_window_matches_the_plain_one(tok: Tokenizer) -> None:
    """On a huge prefix only a tail is tokenized, and the window is the one a full pass would pick."""
    import decoding.prompt as prompt_mod

    text = _long_file(3000)
    p = build_prompt(tok, text, len(text), 200)
    assert prompt_mod._region_start(text, 200) > 0  # the shortcut is taken
    # The same window computed over the tail alone (no shortcut possible) agrees.
    tail_start = prompt_mod._region_start(text, 200)
    q = build_prompt(tok, text[tail_start:], len(text) - tail_start, 200)
    assert p.ids == q.ids and p.window_start == tail_start + q.window_start
    assert len(p.ids) <= 200 and text.endswith(_body(tok, p.ids) + p.heal)
