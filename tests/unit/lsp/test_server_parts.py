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


def test_a_due_full_collection_runs_on_the_worker_only_once_requests_have_paused(monkeypatch) -> None:
    import time
    import weakref

    from lsp import collector, server as server_mod

    class Node:
        def __init__(self) -> None:
            self.me = self

    monkeypatch.setattr(server_mod, "IDLE_S", 0.05)

    async def scenario() -> tuple[bool, bool, bool]:
        ls = DraftServer()
        ls.loop = asyncio.get_running_loop()
        node = Node()
        alive = weakref.ref(node)
        collector.after_request()
        del node
        kept = [[None] for _ in range(int(1.5 * (collector.stats.frozen + 1000)))]  # due: the heap grew
        ls.pending["file:///a.py"] = object()  # a completion in flight: no collection
        ls.last_done = time.monotonic()
        ls.tidy_when_idle()
        await asyncio.sleep(0.3)
        during = alive() is not None
        del ls.pending["file:///a.py"]
        ls.last_done = time.monotonic()  # one just ended: the pause starts now
        ls.tidy_when_idle()
        just_after = alive() is not None
        for _ in range(40):
            await asyncio.sleep(0.05)
            if alive() is None:
                break
        ls.worker.shutdown(wait=True)
        del kept
        return during, just_after, alive() is None

    with collector.installed():
        during, just_after, reclaimed = asyncio.run(scenario())
    assert during and just_after and reclaimed
