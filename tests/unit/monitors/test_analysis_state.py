"""jedi's inference state, shared by a workspace's queries: the same answers as a fresh state
per query, and forgotten when files change on disk (real jedi, real stdlib code)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import monitors.analysis as analysis_mod
from monitors.analysis import Analysis


def _states(a: Analysis) -> dict[str, analysis_mod._State]:
    """The jedi thread's shared states (they are thread-local)."""
    return a._jedi.submit(lambda: dict(a._states.by_root)).result()


def _points(source: str, count: int) -> list[int]:
    """Offsets right after `self.` / `parser.` / `os.path.` dereferences spread over a module."""
    found = [m.end() for m in re.finditer(r"\b(?:self|parser|os\.path|action)\.", source)]
    step = max(1, len(found) // count)
    return found[::step][:count]


def test_a_shared_state_gives_the_same_names_as_a_fresh_one_per_query(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    source = Path(argparse.__file__).read_text()
    points = _points(source, 12)
    assert len(points) == 12
    # Dynamic parameter search on: more inference for the shared state to get wrong.
    shared = Analysis(timeout=60, dynamic_params=True)
    fresh = Analysis(timeout=60, dynamic_params=True)
    monkeypatch.setattr(fresh, "_share_state", lambda script, root: None)
    path, ws = str(tmp_path / "argparse_copy.py"), str(tmp_path)
    answered = 0
    for offset in points:
        # The document as it is while typing: cut at the point, the rest of the module after it.
        code = source[:offset] + "\n" + source[offset:]
        a = shared.names(code, offset, path, ws)
        b = fresh.names(code, offset, path, ws)
        assert a == b, source[offset - 30 : offset]
        answered += a is not None
    assert answered >= 8
    states = _states(shared)
    assert list(states) == [ws] and states[ws].queries >= 12  # one state answered them all


def _workspace(tmp_path: Path, attrs: list[str]) -> None:
    body = "".join(f"        self.{a} = 1\n" for a in attrs)
    (tmp_path / "shapes.py").write_text(f"class Shape:\n    def __init__(self):\n{body}")


def test_saved_files_are_seen_after_invalidate_or_once_changed_on_disk(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    _workspace(tmp_path, ["width"])
    monkeypatch.setattr(analysis_mod, "STATE_CHECK_S", 3600.0)
    a = Analysis(timeout=60)
    path, ws = str(tmp_path / "main.py"), str(tmp_path)

    def names(i: int) -> frozenset[str]:
        code = f"import shapes\nn = {i}\nshapes.Shape()."  # a new document each time: no cached answer
        got = a.names(code, len(code), path, ws)
        assert got is not None
        return got

    assert "width" in names(0)
    _workspace(tmp_path, ["width", "height"])  # another module saved
    assert "height" not in names(1)  # until it looks, the state holds the module as it was
    a.invalidate()  # what the server does on didSave
    assert {"width", "height"} <= names(2)
    state = _states(a)[str(tmp_path)].inference
    monkeypatch.setattr(analysis_mod, "STATE_CHECK_S", 0.0)
    assert "depth" not in names(3) and _states(a)[str(tmp_path)].inference is state  # nothing changed: kept
    _workspace(tmp_path, ["width", "height", "depth"])  # written by another program: no didSave
    assert "depth" in names(4)
    assert _states(a)[str(tmp_path)].inference is not state


def test_a_file_dated_in_the_future_does_not_renew_the_state_every_query(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    import os
    import time

    _workspace(tmp_path, ["width"])
    future = time.time() + 3600
    os.utime(tmp_path / "shapes.py", (future, future))
    monkeypatch.setattr(analysis_mod, "STATE_CHECK_S", 0.0)
    a = Analysis(timeout=60)
    path, ws = str(tmp_path / "main.py"), str(tmp_path)
    seen = []
    for i in range(3):
        code = f"import shapes\nn = {i}\nshapes.Shape()."
        assert "width" in (a.names(code, len(code), path, ws) or ())
        seen.append(_states(a)[ws].inference)
    assert seen[0] is seen[1] is seen[2]


def test_a_state_is_rebuilt_after_its_query_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis_mod, "STATE_QUERIES", 3)
    a = Analysis(timeout=60)
    seen = []
    for i in range(7):
        code = f"import os\nx = {i}\nos."
        assert a.names(code, len(code), None, None) is not None
        seen.append(_states(a)["."].inference)
    assert len({id(s) for s in seen}) == 3 and seen[1] is seen[0] and seen[2] is seen[0] and seen[3] is not seen[0]


def test_a_state_is_dropped_after_jedi_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """jedi leaves recursion placeholders in its memo caches when it raises mid-inference:
    a state that saw an exception must not answer later queries."""
    import jedi

    a = Analysis(timeout=60)
    code = "import os\nos."
    assert a.names(code, len(code), None, None)
    first = _states(a)["."].inference
    real = jedi.Script.complete

    def broken(self: jedi.Script, *args: object, **kwargs: object) -> object:
        raise RuntimeError("jedi failed mid-query")

    monkeypatch.setattr(jedi.Script, "complete", broken)
    code = "import os\nx = 1\nos."
    assert a.names(code, len(code), None, None) is None and a.stats.errors == 1
    assert "." not in _states(a)
    monkeypatch.setattr(jedi.Script, "complete", real)
    code = "import os\nx = 2\nos."
    names = a.names(code, len(code), None, None)
    assert names is not None and "path" in names
    assert _states(a)["."].inference is not first


def test_parameters_are_inferred_from_their_calls_only_where_nobody_waits() -> None:
    """jedi's dynamic parameter search: on for the cursor's query started ahead (and for the
    name checker), off for the queries a draft waits for (cost)."""
    code = "def shout(word):\n    return word.\n\nshout('hi')\n"
    offset = code.index("word.") + len("word.")
    assert Analysis(timeout=60).names(code, offset, None, None) is None  # unknown: the monitor steps aside
    ahead = Analysis(timeout=60)
    ahead.prefetch(code, offset, None, None)
    names = ahead.names(code, offset, None, None)  # picks up the prefetched answer
    assert names is not None and {"upper", "startswith"} <= names
    names = Analysis(timeout=60, dynamic_params=True).names(code, offset, None, None)
    assert names is not None and {"upper", "startswith"} <= names
