"""Static analysis under faults: a hung jedi, a flood of queries, and the caches' limits (real jedi)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

import monitors.analysis as analysis_mod
from monitors.analysis import Analysis

CODE = "import os\nos."


def test_a_hung_query_times_out_is_logged_and_a_fresh_jedi_thread_takes_over(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(analysis_mod, "HUNG_S", 0.3)
    a = Analysis(timeout=0.1)
    real = a._complete
    release, calls = threading.Event(), []

    def hang_once(*args: object) -> frozenset[str] | None:
        calls.append(args)
        if len(calls) == 1:
            release.wait(30)  # jedi stuck in one file, as with a pathological module
        return real(*args)

    monkeypatch.setattr(a, "_complete", hang_once)
    with caplog.at_level(logging.INFO, logger="monitors.analysis"):
        assert a.names(CODE, len(CODE), None, None) is None  # times out: the monitor steps aside
        assert a.stats.timeouts == 1 and any("no answer" in r.message for r in caplog.records)
        time.sleep(0.4)
        a.timeout = 30  # a cold jedi needs a second or two for `os.`
        names = a.names(CODE + "p", len(CODE) + 1, None, None, deadline=time.perf_counter() + 30)
    release.set()
    assert a.stats.hung == 1 and any("stuck" in r.message for r in caplog.records)
    assert names is not None and "path" in names


def test_too_many_waiting_queries_step_aside_instead_of_queueing_without_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis_mod, "MAX_INFLIGHT", 3)
    a = Analysis(timeout=0.01)
    gate = threading.Event()
    monkeypatch.setattr(a, "_complete", lambda *args: gate.wait(10) and frozenset({"x"}))
    for i in range(6):
        a.prefetch(f"x{i} = 1\n{CODE}", len(CODE) + 7, None, None)
    assert len(a._inflight) == 3 and a.stats.busy == 3 and a.stats.queries == 3
    assert a.names("y = 2\n" + CODE, len(CODE) + 6, None, None) is None
    gate.set()
    a._jedi.shutdown(wait=True)
    assert not a._inflight


def test_answers_and_projects_are_kept_within_their_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(analysis_mod, "CACHE_SIZE", 5)
    monkeypatch.setattr(analysis_mod, "PROJECTS", 2)
    a = Analysis(timeout=30)
    for i in range(4):
        root = tmp_path / f"ws{i}"
        root.mkdir()
        for j in range(3):
            code = f"value{j} = {j}\n{CODE}"
            assert a.names(code, len(code), str(root / "m.py"), str(root)) is not None
    assert a.cache_size == 5 and a.project_count == 2
    assert set(a._projects) == {str(tmp_path / "ws2"), str(tmp_path / "ws3")}  # the newest kept


def test_equal_answers_at_different_points_are_kept_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typing makes a new cache key per keystroke for the same object's attributes: one copy is kept."""
    monkeypatch.setattr(analysis_mod, "CACHE_SIZE", 4)
    a = Analysis(timeout=30)
    found = [a.names(f"import os\nx = {i}\nos.", len(f"import os\nx = {i}\nos."), None, None) for i in range(10)]
    assert all(f == found[0] for f in found[1:]) and "path" in found[0]
    assert a.cache_size == 4 and len(a._distinct) == 1
    assert len({id(v) for v in a._cache.values()}) == 1  # four keys, one copy of the names
    other = a.names("import sys\nsys.", len("import sys\nsys."), None, None)
    assert other is not None and "argv" in other and len(a._distinct) == 2
