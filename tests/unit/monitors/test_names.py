"""The name monitor with real jedi and the real SmolLM2 vocabulary: triggers, masks, stepping aside."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from monitors.analysis import Analysis
from monitors.names import NameMonitor
from monitors.vocab import VocabIndex


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return Analysis(timeout=60)  # generous: these tests check answers, not speed


def monitor(index: VocabIndex, analysis: Analysis, before: str, after: str = "\n", path: str | None = None,
            workspace: str | None = None) -> NameMonitor:
    return NameMonitor(index, analysis, before, after, path, workspace)


def ids(index: VocabIndex, *pieces: bytes) -> list[int]:
    out = []
    for p in pieces:
        found = index.ids_of(p)
        assert found, p
        out.append(found[0])
    return out


def feed(m: NameMonitor, index: VocabIndex, *pieces: bytes) -> None:
    for i in ids(index, *pieces):
        m.accept(i)


def test_after_a_dereference_only_real_attributes_are_allowed(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "import os\n\npath = os.path.")
    mask = m.allowed()
    assert mask is not None and m.active
    join, get, xyz, space = ids(smol_index, b"join", b"get", b"xyz", b" join")
    assert mask[join] and mask[get]  # join, getatime, getsize, ...
    assert not mask[xyz] and not mask[space]  # no such attribute; no space after the dot
    # Every allowed token keeps the text on a path to a name jedi gave (or finishes one), and
    # those names are os.path's (jedi reads typeshed, which also lists ntpath's private helpers).
    code = "import os\n\npath = os.path."
    names = [n.encode() for n in analysis.names(code + "\n", len(code), None, None)]
    assert {n.encode() for n in dir(os.path) if not n.startswith("_")} <= set(names)
    for t in torch.nonzero(mask).flatten().tolist()[:3000]:
        piece = smol_index.token_bytes(t)
        assert any(n.startswith(piece) or piece.startswith(n) for n in names), piece


def test_a_finished_name_releases_the_constraint_until_the_next_dot(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "import os\n\npath = os.path.")
    feed(m, smol_index, b"join")
    assert m.active  # "join" could still become "joinpath"-like names: not finished yet
    feed(m, smol_index, b"(")
    assert not m.active and m.allowed() is None and m.stats.names == ["join"]
    feed(m, smol_index, b"os", b".")
    assert m.active and m.stats.triggers == 2
    mask = m.allowed()
    assert mask[ids(smol_index, b"getcwd")[0]] if smol_index.ids_of(b"getcwd") else mask[ids(smol_index, b"get")[0]]


def test_rollback_and_fork_restore_the_constraint(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "import os\n\npath = os.path.")
    before = m.allowed()
    feed(m, smol_index, b"join", b"(")
    other = m.fork()
    m.rollback(2)
    assert m.active and torch.equal(m.allowed(), before)
    assert not other.active  # the fork kept its own state
    with pytest.raises(ValueError):
        m.rollback(5)


@pytest.mark.parametrize("before", [
    's = "see os.',  # in a string
    "# call os.",  # in a comment
    "x = 1.",  # a number, not a dereference
    "def f(thing):\n    return thing.",  # jedi knows nothing about `thing`
])
def test_no_constraint_where_names_are_free_or_unknown(smol_index: VocabIndex, analysis: Analysis, before: str) -> None:
    m = monitor(smol_index, analysis, "import os\n" + before)
    assert m.allowed() is None and not m.active


def test_objects_with_getattr_are_left_alone(smol_index: VocabIndex, analysis: Analysis) -> None:
    code = "class Proxy:\n    def __getattr__(self, name):\n        return 1\n\n\nProxy()."
    m = monitor(smol_index, analysis, code)
    assert m.allowed() is None and analysis.stats.dynamic >= 1


def test_imports_allow_existing_modules_with_their_leading_space(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "import")  # byte-level BPE: the next token is " os", space included
    mask = m.allowed()
    assert mask is not None
    assert mask[ids(smol_index, b" os")[0]] and not mask[ids(smol_index, b"os")[0]]
    m2 = monitor(smol_index, analysis, "from os import ")
    mask2 = m2.allowed()
    assert mask2 is not None and mask2[ids(smol_index, b"path")[0]] and not mask2[ids(smol_index, b"xyz")[0]]


def test_names_come_from_other_modules_of_the_workspace(smol_index: VocabIndex, analysis: Analysis,
                                                        tmp_path: Path) -> None:
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "__init__.py").write_text("")
    (tmp_path / "shapes" / "circle.py").write_text(
        "class Circle:\n    def __init__(self, r):\n        self.radius = r\n\n"
        "    def circumference(self):\n        return 6.283 * self.radius\n")
    main = tmp_path / "main.py"
    code = "from shapes.circle import Circle\n\nc = Circle(2)\nprint(c."
    main.write_text(code)
    m = monitor(smol_index, analysis, code, ")\n", str(main), str(tmp_path))
    mask = m.allowed()
    assert mask is not None
    allowed = {smol_index.token_bytes(t) for t in torch.nonzero(mask).flatten().tolist()}
    assert b"radius" in allowed or b"rad" in allowed or b"r" in allowed
    assert b"circum" in allowed or b"circ" in allowed or b"c" in allowed
    assert b"diameter" not in allowed and b"area" not in allowed


def test_a_failing_or_slow_analysis_steps_aside(smol_index: VocabIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Analysis(timeout=5)

    def boom(*args: object) -> None:
        raise RuntimeError("parso exploded")

    monkeypatch.setattr(broken, "_complete", boom)
    m = monitor(smol_index, broken, "import os\nos.")
    assert m.allowed() is None and broken.stats.errors == 1 and m.stats.stepped_aside == 1

    slow = Analysis(timeout=0.05)

    def sleepy(*args: object) -> frozenset[str]:
        import time
        time.sleep(0.5)
        return frozenset({"late"})

    monkeypatch.setattr(slow, "_complete", sleepy)
    m = monitor(smol_index, slow, "import os\nos.")
    assert m.allowed() is None and slow.stats.timeouts == 1


def test_attributes_the_document_uses_on_the_same_receiver_are_allowed(smol_index: VocabIndex,
                                                                        analysis: Analysis) -> None:
    # `Meta` is set on the object elsewhere at run time (as markdown extensions do): jedi cannot
    # see it, but the document uses `self.md.Meta`, so it exists.
    code = ("class Markdown:\n    def convert(self, text):\n        return text\n\n\n"
            "class Ext:\n    def __init__(self):\n        self.md = Markdown()\n\n"
            "    def run(self):\n        meta = self.md.Meta['title']\n        return self.md.")
    m = monitor(smol_index, analysis, code)
    mask = m.allowed()
    assert mask is not None
    assert mask[ids(smol_index, b"Meta")[0]] and mask[ids(smol_index, b"convert")[0]]
    assert not mask[ids(smol_index, b"xyz")[0]]


def test_a_token_carrying_the_dot_and_the_name_start_is_checked(smol_index: VocabIndex, analysis: Analysis) -> None:
    code = ("class Box:\n    def _secret(self):\n        return 1\n\n    def open(self):\n"
            "        return self")
    m = monitor(smol_index, analysis, code)
    assert m.allowed() is None
    feed(m, smol_index, b"._")  # one SmolLM2 token: the trigger is inside it
    assert m.active and m.stats.triggers == 1
    mask = m.allowed()
    assert mask[ids(smol_index, b"secret")[0]] and not mask[ids(smol_index, b"xyz")[0]]


def test_healing_prefetches_the_query_of_the_retyped_dot(smol_index: VocabIndex, analysis: Analysis) -> None:
    fresh = Analysis(timeout=60)
    m = NameMonitor(smol_index, fresh, "import os\nos", "\n", None, None, heal=".")
    assert fresh.stats.queries == 1  # asked before any token: jedi works while the prompt is read
    feed(m, smol_index, b".")
    assert m.active and fresh.stats.queries == 1  # the same query, not a second one


def test_a_module_with_getattr_keeps_its_names(smol_index: VocabIndex, analysis: Analysis, tmp_path: Path) -> None:
    # PEP 562: a module-level __getattr__ (lazy imports, deprecations, as in networkx) does
    # not make every name valid, unlike a proxy class.
    (tmp_path / "lazy.py").write_text("def __getattr__(name):\n    raise AttributeError(name)\n\n\n"
                                      "def shortest_path():\n    return []\n")
    code = "import lazy\n\nlazy."
    main = tmp_path / "main.py"
    main.write_text(code)
    m = monitor(smol_index, analysis, code, "\n", str(main), str(tmp_path))
    mask = m.allowed()
    assert mask is not None and mask[ids(smol_index, b"short")[0]] and not mask[ids(smol_index, b"xyz")[0]]


def test_after_a_timeout_a_request_waits_no_more(smol_index: VocabIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from monitors.names import MonitorStats
    from monitors.analysis import WaitBudget

    slow = Analysis(timeout=10)

    def sleepy(*args: object) -> frozenset[str]:
        time.sleep(0.6)
        return frozenset({"late"})

    monkeypatch.setattr(slow, "_complete", sleepy)
    stats = MonitorStats(wait=WaitBudget(0.3))
    m = NameMonitor(smol_index, slow, "import os\nos.", "\n", None, None, stats=stats)
    assert m.allowed() is None and slow.stats.timeouts == 1 and stats.wait.left_s == 0
    feed(m, smol_index, b"getcwd", b"().")  # a second trigger in the same request
    assert m.allowed() is None and slow.stats.timeouts == 2
    assert len(slow._inflight) == 2  # neither query was waited for to the end: both still run or wait


def test_a_healed_dot_is_constrained_with_the_name_after_it(smol_index: VocabIndex, analysis: Analysis) -> None:
    # Healing backs off the "." of `os.path.`: the prompt ends at `os.path`, which is not a
    # name being typed after a dot. The model re-types the ".", perhaps with a token that
    # goes on past it ("._", ".("): the dot and the name are constrained as one path.
    m = NameMonitor(smol_index, analysis, "import os\nx = os.path", "\n", None, None, heal=".")
    mask = m.allowed()
    assert mask is not None and m.stats.triggers == 1  # one query, for `os.path.`, not for `os.path`
    dot, dunder, paren, dots = ids(smol_index, b".", b".__", b".(", b"..")
    assert mask[dot] and mask[dunder] and not mask[paren] and not mask[dots]  # `os.path.__file__` exists
    feed(m, smol_index, b".")
    assert m.active and m.stats.triggers == 1
    mask = m.allowed()
    assert mask[ids(smol_index, b"join")[0]] and not mask[ids(smol_index, b"append")[0]]
    m2 = NameMonitor(smol_index, analysis, "import os\nx = os.path", "\n", None, None, heal=".")
    feed(m2, smol_index, b".__", b"file", b"__", b")")
    assert m2.stats.names == ["__file__"] and m2.stats.violations == 0 and not m2.active


def test_relative_imports_offer_the_package_modules(smol_index: VocabIndex, analysis: Analysis, tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "helpers.py", "models.py", "sub/__init__.py", "sub/views.py"):
        (pkg / f).write_text("X = 1\n")
    path = pkg / "sub" / "views.py"
    m = NameMonitor(smol_index, analysis, "from .", "\n", str(path), str(tmp_path))
    mask = m.allowed()
    assert mask is not None and m.active
    allowed = {smol_index.token_bytes(t) for t in torch.nonzero(mask).flatten().tolist()}
    assert b"views" in allowed or b"view" in allowed  # a module of this package
    assert b" import" in allowed  # `from . import views`
    assert b"." in allowed  # `from ..models`: one level up
    assert b"os" not in allowed and b"context" not in allowed
    feed(m, smol_index, b".")
    mask = m.allowed()
    allowed = {smol_index.token_bytes(t) for t in torch.nonzero(mask).flatten().tolist()}
    assert b"models" in allowed or b"mod" in allowed or b"model" in allowed  # the parent's modules
    assert b"views" not in allowed


def test_a_draft_cut_in_the_middle_of_a_name_does_not_show_the_half_name(smol_index: VocabIndex,
                                                                         analysis: Analysis) -> None:
    from decoding.sampling import Drafting
    from tests.unit.decoding.test_engine import NoStop

    def drafting(*pieces: bytes) -> Drafting:
        d = Drafting(smol_index, [monitor(smol_index, analysis, "import os\n\nx = os.path.")], NoStop(), b"", set())  # type: ignore[arg-type]
        logits = torch.zeros(smol_index.vocab_size)
        for t in ids(smol_index, *pieces):
            assert d.take(t, logits, logits)
        d.reason = "time"  # the time budget ran out here
        return d

    assert smol_index.ids_of(b"spl") and not any(n == "spl" for n in dir(os.path))
    assert drafting(b"spl").shown() == ""  # half of `splitext`: not shown (the dot is the document's)
    assert drafting(b"join").shown() == "join"  # a whole name (though `joinpath`-like ones go on)
    # A half name after a dot the draft wrote goes with its dot; so does a dot with no name yet.
    assert drafting(b"join", b"(", b"os", b".", b"get").shown() == "join(os"
    assert drafting(b"join", b"(", b"os", b".").shown() == "join(os"
    assert drafting(b"join", b"(", b"os", b".", b"getcwd").shown() == "join(os.getcwd"
    assert drafting(b"join", b"(").shown() == "join("


def test_a_name_that_a_late_jedi_answer_shows_missing_is_not_shown(smol_index: VocabIndex,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """jedi gave no answer in time, so the draft went on unconstrained; the answer lands
    before the draft is shown, and a name it lacks is cut off with its dot."""
    from decoding.sampling import Drafting
    from tests.unit.decoding.test_engine import NoStop

    late = Analysis(timeout=0.0)  # no wait at all: every trigger steps aside, its query goes on
    real = late._complete

    def cold(*args: object) -> frozenset[str] | None:
        time.sleep(0.2)  # a cold module: no query is done before the draft's next token
        return real(*args)

    monkeypatch.setattr(late, "_complete", cold)

    def shown(*pieces: bytes, doc: str = "import os\n\nx = os.path.") -> str:
        d = Drafting(smol_index, [monitor(smol_index, late, doc)], NoStop(), b"", set())  # type: ignore[arg-type]
        logits = torch.zeros(smol_index.vocab_size)
        for t in ids(smol_index, *pieces):
            assert d.take(t, logits, logits)  # unconstrained: any token is taken
        late._jedi.submit(lambda: None).result()  # the queries ahead of this one have answered
        d.reason = "rule"
        return d.shown()

    assert "foo" not in dir(os) and "cwd" not in dir(os)
    assert shown(b"join", b"(", b"os", b".", b"foo", b")") == "join(os"
    assert shown(b"join", b"(", b"os", b".", b"getcwd", b"())") == "join(os.getcwd())"
    # The first name, after the document's own dot (a new document: its query is not answered yet).
    assert shown(b"foo", b"(", b"x", b")", doc="import os\n\ny = os.path.") == ""
    # A half name that no valid name starts with (another document again, for a fresh query).
    assert shown(b"join", b"(", b"os", b".", b"cwd", doc="import os\n\nz = os.path.") == "join(os"
    # Half of a valid name, and a dot with no name yet, are not shown either (as when constrained).
    assert shown(b"join", b"(", b"os", b".", b"get", doc="import os\n\nw = os.path.") == "join(os"
    assert shown(b"join", b"(", b"os", b".", doc="import os\n\nv = os.path.") == "join(os"
    assert late.stats.timeouts >= 4


def test_a_dereference_inside_a_drafted_call_is_asked_with_the_call_closed(smol_index: VocabIndex,
                                                                           analysis: Analysis,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    real = analysis.names

    def spy(code: str, *args: object, **kwargs: object) -> object:
        asked.append(code)
        return real(code, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "names", spy)
    before, after = "import os\n\nx = ", "\nprint(x)\n"
    m = monitor(smol_index, analysis, before, after)
    feed(m, smol_index, b"len", b"(", b"os", b".")
    mask = m.allowed()
    assert mask is not None and mask[ids(smol_index, b"environ")[0]] and not mask[ids(smol_index, b"xyz")[0]]
    assert asked[-1] == before + "len(os.)" + after


def test_a_receiver_met_again_on_the_line_reuses_its_names_unless_rebound(smol_index: VocabIndex,
                                                                          analysis: Analysis,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    real = analysis.names

    def spy(code: str, offset: int, *args: object, **kwargs: object) -> object:
        asked.append(code[:offset])
        return real(code, offset, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "names", spy)
    m = monitor(smol_index, analysis, "import os\n\nx = (os.path.")
    assert m.allowed() is not None
    feed(m, smol_index, b"join", b",", b" os", b".", b"path", b".")
    # `os.` was asked; the second `os.path.` was not: the names are the first one's.
    assert [a[-8:] for a in asked] == ["os.path.", "oin, os."]
    mask = m.allowed()
    assert mask is not None and mask[ids(smol_index, b"join")[0]] and not mask[ids(smol_index, b"xyz")[0]]
    assert m.stats.reused == 1

    # An assignment in between (here a keyword argument) may bind the name anew: ask again.
    asked.clear()
    m = monitor(smol_index, analysis, "import os\n\nx = f(os.path.")
    assert m.allowed() is not None
    feed(m, smol_index, b"join", b",", b" a", b"=", b"os", b".", b"path", b".")
    assert m.allowed() is not None
    assert [a[-10:] for a in asked] == ["f(os.path.", "oin, a=os.", "a=os.path."] and m.stats.reused == 0


def test_seen_attributes_are_the_receivers_own_uses_only() -> None:
    from monitors.names import seen_attributes

    code = "xself.a = a.self.b + self.c\nf(self.d, éself.e, self_.f)\nz = self."
    assert seen_attributes(code, len(code)) == {"c", "d"}
    assert seen_attributes("self.x\nself.", len("self.x\nself.")) == {"x"}  # at the very start too
    assert seen_attributes("y = 1 + ", 8) == frozenset()  # no receiver before the point


def test_a_cursor_in_a_name_after_a_dot_is_asked_early_and_shares_the_answer_at_the_dot(
        smol_index: VocabIndex) -> None:
    # Without token healing the cursor stays in the name (`os.pa|`); with it, the name is backed
    # off and re-typed after the dot, which is the dot's own query.
    fresh = Analysis(timeout=60)
    after = "\nprint(1)\n"
    # The request at the dot, then two keystrokes of the name: one jedi query in all.
    at_dot = NameMonitor(smol_index, fresh, "import os\npath = os.", after, None, None)
    assert at_dot.allowed() is not None and fresh.stats.queries == 1
    for typed, on, off in (("pa", b"th", b"x"), ("pat", b"h", b"x")):
        m = NameMonitor(smol_index, fresh, "import os\npath = os." + typed, after, None, None)
        mask = m.allowed()
        assert mask is not None and m.active
        assert mask[ids(smol_index, on)[0]] and not mask[ids(smol_index, off)[0]]  # on to `path`
    assert fresh.stats.queries == 1 and fresh.stats.cache_hits >= 2
    # A new name: asked when the monitor is made (while the model reads the prompt), not at the first mask.
    fresh2 = Analysis(timeout=60)
    m = NameMonitor(smol_index, fresh2, "import os\nsep = os.se", after, None, None)
    assert fresh2.stats.queries == 1
    assert m.allowed() is not None and m.active and fresh2.stats.queries == 1
