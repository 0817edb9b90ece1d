"""Server pieces that need no client: the word range, the handler guard, draft post-processing, settings merging."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types

from decoding.engine import CompletionResult
from decoding.sampling import Draft
from decoding.settings import Settings
from lsp.server import DraftServer, guarded, word_start


@pytest.mark.parametrize(("text", "expected"), [
    ("os.path.jo", "jo"), ("x = ", ""), ("foo(bar_1", "bar_1"), ("ñandú", "ñandú"), ("a.", ""), ("", ""),
])
def test_word_start_finds_the_typed_identifier(text: str, expected: str) -> None:
    assert text[word_start(text, len(text)) :] == expected


def test_guard_turns_an_exception_into_the_default_answer_and_counts_it() -> None:
    server = DraftServer()

    @guarded(lambda: types.InlineCompletionList(items=[]))
    async def handler(ls: DraftServer, params: object) -> types.InlineCompletionList:
        raise RuntimeError("the model fell over")

    result = asyncio.run(handler(server, None))
    assert result == types.InlineCompletionList(items=[])
    assert server.stats.errors == 1


def test_guard_lets_cancellation_through() -> None:
    server = DraftServer()

    @guarded(lambda: None)
    async def handler(ls: DraftServer) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(handler(server))
    assert server.stats.errors == 0


def test_drafts_keep_the_typed_word_drop_empties_and_respect_the_count() -> None:
    server = DraftServer(Settings(drafts=2))
    text = "x = 1\nname = os.path.jo"
    result = CompletionResult([Draft("in(a, b)"), Draft(""), Draft("inx"), Draft("in(c)")], {"total_ms": 1.0})
    rng, inserts = server.drafts_for(text, len(text), result)
    assert inserts == ["join(a, b)", "joinx"]
    assert rng == types.Range(types.Position(1, 15), types.Position(1, 17))


def test_settings_merge_flat_and_sectioned_and_ignore_non_objects() -> None:
    server = DraftServer(Settings(model="tiny"))
    server.apply_settings({"drafts": 5}, "test")
    server.apply_settings({"draftls": {"mode": "line", "drafts": "x"}}, "test")
    server.apply_settings(["not", "a", "dict"], "test")
    assert server.settings.model == "tiny"  # the command line's base stays
    assert server.settings.mode == "line"
    assert server.settings.drafts == 3  # the bad value fell back to the default
