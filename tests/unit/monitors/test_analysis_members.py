"""Signatures of `obj.name(` read off the names query at `obj.`, with real jedi: the same answers
as a new Script's, and a new Script wherever that query cannot answer."""

from __future__ import annotations

from monitors.analysis import Analysis, closing

BOX = """import json

class Box:
    def put(self, item, *, key=None):
        return item

    @property
    def opener(self):
        return open

box = Box()
"""


def after_names(before: str, call: str, after: str = "\nprint(1)\n") -> tuple[Analysis, object]:
    """Ask the names at the end of `before`, then the signatures of `before + call`."""
    analysis = Analysis(timeout=60)
    assert analysis.names(before + after, len(before), None, None)
    draft = call
    code = before + draft + closing(draft) + after
    return analysis, analysis.signatures(code, len(before) + len(draft), None, None)


def fresh(before: str, call: str, after: str = "\nprint(1)\n") -> object:
    """The same signatures from an Analysis that never saw the names query."""
    draft = call
    return Analysis(timeout=60).signatures(before + draft + closing(draft) + after, len(before) + len(draft), None, None)


def test_a_method_call_after_its_receivers_names_query_takes_the_signature_from_it() -> None:
    for before, call in ((BOX + "box.", "put("), ("import json\n\ntext = json.", "dumps(")):
        analysis, sigs = after_names(before, call)
        assert analysis.stats.members == 1, call
        assert sigs is not None and sigs == fresh(before, call), call
        assert all(s.bracket == len(before) + len(call) - 1 for s in sigs)
    analysis, sigs = after_names(BOX + "box.", "put(")
    (sig,) = sigs
    assert [(p.name, p.kind, p.required) for p in sig.params] == [("item", "POSITIONAL_OR_KEYWORD", True),
                                                                  ("key", "KEYWORD_ONLY", False)]


def test_a_property_or_a_name_the_receiver_lacks_asks_a_new_script() -> None:
    # A property's completion has no signatures, but calling its value has: jedi's Script path.
    analysis, sigs = after_names(BOX + "box.", "opener(")
    assert analysis.stats.members == 0
    assert sigs == fresh(BOX + "box.", "opener(")
    analysis, sigs = after_names(BOX + "box.", "nothing_here(")
    assert analysis.stats.members == 0 and sigs is None


def test_only_the_code_of_that_query_counts() -> None:
    analysis = Analysis(timeout=60)
    before, after = BOX + "box.", "\nprint(1)\n"
    assert analysis.names(before + after, len(before), None, None)
    # The document changed after the names query (another line): that query says nothing here.
    other = before.replace("return item", "return [item]")
    assert analysis.signatures(other + "put()" + after, len(other) + 4, None, None) is not None
    assert analysis.stats.members == 0
    # Files saved: the completions are forgotten with the answers.
    analysis.invalidate()
    assert analysis.signatures(before + "put()" + after, len(before) + 4, None, None) is not None
    assert analysis.stats.members == 0


def test_a_completion_that_raises_hands_the_call_to_a_new_script(monkeypatch) -> None:
    before, after = BOX + "box.", "\nprint(1)\n"
    analysis = Analysis(timeout=60)
    assert analysis.names(before + after, len(before), None, None)
    (completions,) = analysis._listings.values()

    def broken() -> list:
        raise KeyError("a module gone from parso's cache")

    monkeypatch.setattr(completions["put"], "get_signatures", broken)
    sigs = analysis.signatures(before + "put()" + after, len(before) + 4, None, None)
    assert sigs == fresh(before, "put(", after) and sigs is not None
    assert analysis.stats.members == 0 and analysis.stats.errors == 0
    assert not analysis._listings  # forgotten with the shared state it may have left half-inferred
