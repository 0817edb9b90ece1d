"""The call monitor with real jedi and the real SmolLM2 vocabulary: keyword names and early `)`."""

from __future__ import annotations

import pytest

from monitors.analysis import Analysis, Param, Signature
from monitors.calls import CallMonitor, verdict
from monitors.vocab import VocabIndex


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return Analysis(timeout=60)  # generous: these tests check answers, not speed


def monitor(index: VocabIndex, analysis: Analysis, before: str, after: str = "\n") -> CallMonitor:
    return CallMonitor(index, analysis, before, after, None, None)


def tid(index: VocabIndex, piece: bytes) -> int:
    found = index.ids_of(piece)
    assert found, piece
    return found[0]


def feed(m: CallMonitor, index: VocabIndex, *pieces: bytes) -> None:
    for p in pieces:
        m.accept(tid(index, p))


def allows(m: CallMonitor, index: VocabIndex, piece: bytes) -> bool:
    mask = m.allowed()
    return mask is None or bool(mask[tid(index, piece)])


def test_a_call_is_not_closed_before_its_required_argument(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "import json\n\ntext = json.")
    feed(m, smol_index, b"dumps", b"(")
    assert m.stats.triggers == 1
    mask = m.allowed()
    assert mask is not None
    for closer in (b")", b"))", b"):", b" )"):
        assert not mask[tid(smol_index, closer)], closer  # json.dumps() lacks `obj`
    assert mask[tid(smol_index, b"data")] and mask[tid(smol_index, b"(")]
    assert mask[tid(smol_index, b"()")]  # opens and closes an inner call: `dumps()` is not closed
    feed(m, smol_index, b"data")
    assert allows(m, smol_index, b")") and allows(m, smol_index, b"))")
    # Inside a nested bracket the inner `)` is free, and the outer call is still watched.
    feed(m, smol_index, b",", b" {")
    assert m.allowed() is None
    feed(m, smol_index, b"}")
    assert allows(m, smol_index, b")")


def test_keyword_names_come_from_the_signature(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "with open(path, ")
    feed(m, smol_index, b"mode")
    assert allows(m, smol_index, b"=") and allows(m, smol_index, b"='")
    m.rollback(1)
    feed(m, smol_index, b"mod")  # "mod" + "=": no such parameter; but "mod" may go on
    assert not allows(m, smol_index, b"=") and not allows(m, smol_index, b"='")
    assert allows(m, smol_index, b"e") and allows(m, smol_index, b")") and allows(m, smol_index, b" ==")
    m.rollback(1)
    # `file` was given positionally: naming it again is an error.
    feed(m, smol_index, b"file")
    assert not allows(m, smol_index, b"=")
    # json.dumps takes **kwds (typeshed): any keyword name goes.
    m = monitor(smol_index, analysis, "import json\n\ntext = json.dumps(data, ")
    feed(m, smol_index, b"ind")
    assert allows(m, smol_index, b"=")


def test_the_call_the_cursor_is_in_is_read_from_the_document(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "def f(first, second, *, flag=False):\n    pass\n\nf(1, ")
    assert not allows(m, smol_index, b")")  # `second` is missing
    feed(m, smol_index, b"flag")
    assert allows(m, smol_index, b"=")
    feed(m, smol_index, b"=", b"True")
    assert not allows(m, smol_index, b")")  # still missing `second`
    feed(m, smol_index, b",", b" second")
    assert allows(m, smol_index, b"=")
    feed(m, smol_index, b"=", b"2")
    assert allows(m, smol_index, b")")
    feed(m, smol_index, b")")
    assert m.allowed() is None  # the call is closed: nothing to watch


def test_one_more_argument_is_enough_before_the_bracket(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "def g(a, b=1):\n    pass\n\ng(")
    mask = m.allowed()
    assert mask is not None and not mask[tid(smol_index, b")")]
    assert mask[tid(smol_index, b"')")] and mask[tid(smol_index, b'")')]  # `g('')`: a string argument then `)`


def test_kwargs_star_args_and_definitions_are_left_alone(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "def h(a, **kw):\n    pass\n\nh(1, ")
    feed(m, smol_index, b"anchor")
    assert allows(m, smol_index, b"=")  # **kw takes any name
    m = monitor(smol_index, analysis, "def k(a, b):\n    pass\n\nk(*args")
    assert m.allowed() is None  # `*args` may fill everything
    m = monitor(smol_index, analysis, "import os\n")
    feed(m, smol_index, b"def", b" f", b"(")
    assert m.stats.triggers == 0 and m.allowed() is None  # a parameter list, not a call
    feed(m, smol_index, b")", b":")
    m = monitor(smol_index, analysis, "x = 1\nif")
    feed(m, smol_index, b" (")
    assert m.stats.triggers == 0


def test_an_unknown_callee_steps_aside(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "result = undefined_thing(")
    assert m.allowed() is None and m.stats.stepped_aside == 1
    # A class whose __init__ is generated (attrs here) looks like object() to jedi: unknown.
    code = "import attr\n\n@attr.s\nclass Out:\n    _stdout = attr.ib()\n\nOut("
    m = monitor(smol_index, analysis, code)
    feed(m, smol_index, b"stdout")
    assert allows(m, smol_index, b"=") and m.stats.stepped_aside == 1


def test_fork_and_rollback(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = monitor(smol_index, analysis, "import json\n\ntext = json.")
    feed(m, smol_index, b"dumps", b"(")
    other = m.fork()
    feed(m, smol_index, b"data")
    assert allows(m, smol_index, b")") and not allows(other, smol_index, b")")
    m.rollback(1)
    assert not allows(m, smol_index, b")")
    with pytest.raises(ValueError):
        m.rollback(10)


def test_verdict_with_overloads() -> None:
    def sig(*params: tuple[str, str, bool]) -> Signature:
        return Signature(tuple(Param(*p) for p in params), 0)

    one = sig(("a", "POSITIONAL_OR_KEYWORD", True))
    two = sig(("a", "POSITIONAL_OR_KEYWORD", True), ("b", "POSITIONAL_ONLY", True))
    v = verdict((two,), (), b"")
    assert v is not None and v.close == "no" and v.keywords == {"a"}
    v = verdict((one, two), (b"1",), b"")
    assert v is not None and v.close == "ok"  # the first overload is satisfied
    v = verdict((two,), (b"1",), b"")
    assert v is not None and v.close == "bare"  # one more positional would do
    v = verdict((two,), (b"a=1",), b" 2")
    assert v is not None and v.close == "no"  # `b` is positional-only and not yet given
    assert verdict((two,), (b"*xs",), b"") is None


def test_queries_close_the_brackets_the_draft_left_open(smol_index: VocabIndex, analysis: Analysis,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Otherwise the rest of the file sits inside the draft's bracket: parso parses it all again."""
    asked: list[tuple[str, int]] = []
    real = analysis.signatures

    def spy(code: str, offset: int, *args: object, **kwargs: object) -> object:
        asked.append((code, offset))
        return real(code, offset, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "signatures", spy)
    before, after = "import json\n\ntext = json.", "\nprint(text)\n"
    m = monitor(smol_index, analysis, before, after)
    feed(m, smol_index, b"dumps", b"(")
    assert allows(m, smol_index, b"sorted") and not allows(m, smol_index, b")")
    feed(m, smol_index, b"sorted", b"(")
    assert not allows(m, smol_index, b")")  # sorted() lacks its iterable: the inner call was asked
    assert asked == [(before + "dumps()" + after, len(before) + len("dumps(")),
                     (before + "dumps(sorted())" + after, len(before) + len("dumps(sorted("))]


def test_closing_counts_only_the_drafts_own_open_brackets() -> None:
    from monitors.analysis import closing

    assert closing("f(a, [b, {c: (") == ")}])"
    assert closing("x) + g(") == ")"  # the first `)` closes a bracket of the document
    assert closing("f('(', \"[\"") == ")"  # brackets in strings do not count
    assert closing("f(x) # (") == ""
    assert closing("a.b.") == ""


def test_tokens_that_cannot_open_close_or_split_a_call_take_the_fast_path_to_the_same_state(
        smol_index: VocabIndex, hf_tokenizer, monkeypatch) -> None:
    import argparse
    import random

    import monitors.calls as calls

    class NoJedi:  # the frames' bookkeeping is what is compared, not jedi's answers
        def signatures(self, *args, **kwargs):
            return None

        def prefetch(self, *args, **kwargs):
            pass

    src = open(argparse.__file__, encoding="utf-8").read()
    lines = src.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    sites = random.Random(3).sample(range(len(lines) - 3), 120)
    plain = calls._plain
    fast_taken = 0
    cases = [(src[: starts[i] + len(lines[i]) // 2],  # mid-line: often inside a call
              src[starts[i] + len(lines[i]) // 2 : starts[i + 3]],  # that line's rest and two more
              src[starts[i + 3] :]) for i in sites]
    # Calls inside f-string fields, and a newline that ends an unterminated f-string.
    cases.append(("x = 1\n", 'print(f"{x, (y\n, z)\nw = g(1,\n 2)\n', ""))
    for before, draft, after in cases:
        ids = hf_tokenizer.encode(draft, add_special_tokens=False).ids
        states = []
        for fast in (True, False):
            monkeypatch.setattr(calls, "_plain", plain if fast else lambda piece, in_call: False)
            m = CallMonitor(smol_index, NoJedi(), before, after, None, None)
            for t in ids:
                m.accept(t)
                fast_taken += fast and plain(smol_index.token_bytes(t), bool(m._steps[-2].frames))
            states.append([(s.out_len, s.lex, [(f.depth, f.args, f.cur) for f in s.frames]) for s in m._steps])
        assert states[0] == states[1], draft
    assert fast_taken > 500  # the fast path is the common one


def test_a_callee_without_a_signature_is_not_asked_again_in_the_request(smol_index: VocabIndex,
                                                                        analysis: Analysis) -> None:
    """Small models loop (`Dict(Dict(Dict(`): jedi, asked once, has no signature for the callee."""
    m = monitor(smol_index, analysis, "x = ")
    feed(m, smol_index, b"foo", b"(")
    assert m.allowed() is None and m.stats.stepped_aside == 1  # no such function: steps aside
    asked = analysis.stats.queries
    other = m.fork()  # the other drafts of the request share what was learnt
    for draft in (m, other):
        feed(draft, smol_index, b"foo", b"(")
        assert draft.allowed() is None
    assert analysis.stats.queries == asked and m.stats.reused == 2 and m.stats.stepped_aside == 3
    # Another callee is still asked, and constrains.
    feed(m, smol_index, b"len", b"(")
    assert not allows(m, smol_index, b")") and analysis.stats.queries == asked + 1
    # A new request asks again.
    fresh = monitor(smol_index, analysis, "x = 1\n")
    feed(fresh, smol_index, b"foo", b"(")
    assert fresh.allowed() is None and analysis.stats.queries == asked + 2 and fresh.stats.reused == 0
