"""The garbage-collection policy: no full collection inside a completion, garbage reclaimed when idle."""

from __future__ import annotations

import gc
import weakref

from lsp import collector


class Node:
    """A container that refers to itself: only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self


def _full_collections_while(work) -> int:
    """How many oldest-generation collections CPython runs by itself during `work()`."""
    seen: list[int] = []

    def cb(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            seen.append(1)

    gc.callbacks.append(cb)
    try:
        work()
    finally:
        gc.callbacks.remove(cb)
    return len(seen)


def _grow(keep: list, share: float) -> None:
    """Allocate live containers until the heap has grown by `share` (a request's jedi trees)."""
    target = int((len(gc.get_objects()) + gc.get_freeze_count()) * share) + 1000  # frozen ones count too
    for _ in range(target):
        keep.append([None])


def test_no_full_collection_runs_during_a_request_while_installed():
    gc.collect()
    # Without the policy, a request that builds this much makes CPython collect in full by itself.
    plain: list = []
    assert _full_collections_while(lambda: _grow(plain, 0.6)) >= 1
    del plain
    gc.collect()
    with collector.installed():
        kept: list = []
        assert _full_collections_while(lambda: _grow(kept, 0.6)) == 0
        del kept


def test_garbage_frozen_after_a_request_is_reclaimed_when_the_heap_has_grown_and_all_is_quiet():
    with collector.installed():
        node = Node()
        alive = weakref.ref(node)
        collector.after_request()  # frozen while in use
        del node
        gc.collect(1)
        assert alive() is not None  # young collections no longer look at it
        assert collector.idle() == 0.0  # the heap has not grown: nothing is collected
        assert alive() is not None
        kept: list = []
        _grow(kept, collector.GROWTH + 0.1)
        full = collector.stats.full
        assert collector.idle() > 0.0
        assert collector.stats.full == full + 1
        assert alive() is None  # the frozen garbage is gone
        del kept


def test_a_heap_that_doubles_with_no_quiet_moment_is_collected_after_a_request():
    with collector.installed():
        node = Node()
        alive = weakref.ref(node)
        collector.after_request()
        del node
        kept: list = []
        _grow(kept, collector.GROWTH + 0.1)
        collector.after_request()  # grown by a quarter, not doubled: still waits for idle
        assert alive() is not None
        _grow(kept, collector.LIMIT + 0.2)
        collector.after_request()
        assert alive() is None
        del kept


def test_leaving_the_policy_restores_the_thresholds_and_freezes_nothing():
    before = gc.get_threshold()
    with collector.installed():
        assert gc.get_threshold()[2] > before[2]
        with collector.installed():  # nested (a batch inside a server process): one policy
            pass
        assert collector.active()
        collector.after_request()
        assert gc.get_freeze_count() > 0
    assert not collector.active()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert collector.idle() == 0.0  # outside the policy, idle does nothing
    assert gc.get_freeze_count() == 0


def test_requests_never_walk_the_frozen_heap(monkeypatch) -> None:
    # gc.get_freeze_count walks every frozen object (10 ms a million); after every keystroke's
    # request that held up typing bursts. Counting what is not frozen yet is enough.
    with collector.installed():
        def walk() -> int:
            raise AssertionError("walked the frozen heap")

        monkeypatch.setattr(collector.gc, "get_freeze_count", walk)
        kept = [[None] for _ in range(50_000)]
        collector.after_request()
        collector.idle()
        assert collector.stats.frozen >= 50_000
        monkeypatch.undo()
        del kept
