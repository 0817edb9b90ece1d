"""Receivers that jedi found to be proxies (`__getattr__`) are not asked about again in that file."""

from __future__ import annotations

from monitors.analysis import Analysis

TOKENS = """class _TokenType(tuple):
    def __getattr__(self, val):
        new = _TokenType(self + (val,))
        setattr(self, val, new)
        return new

    def split(self):
        return list(self)


Token = _TokenType()
Name = Token.Name
plain = "text"

"""


def test_a_proxy_receiver_is_remembered_with_what_follows_it_but_not_elsewhere() -> None:
    analysis = Analysis(timeout=60)
    code = TOKENS + "a = Name.\n"
    assert analysis.names(code, len(code) - 1, "/w/lexer.py", None) is None  # any name may follow
    assert analysis.stats.dynamic == 1 and analysis.stats.queries == 1
    # The same receiver elsewhere in the file, and an attribute of it: not asked again.
    for tail in ("b = [Name.", "c = Name.Builtin."):
        code = TOKENS + tail + "\n"
        assert analysis.names(code, len(code) - 1, "/w/lexer.py", None) is None
    assert analysis.stats.proxies == 2 and analysis.stats.queries == 1
    # Another receiver, or the same text in another file: asked.
    code = TOKENS + "d = plain.\n"
    assert "upper" in (analysis.names(code, len(code) - 1, "/w/lexer.py", None) or ())
    code = TOKENS + "e = Name.\n"
    assert analysis.names(code, len(code) - 1, "/w/other.py", None) is None
    assert analysis.stats.queries == 3 and analysis.stats.proxies == 2
    # A save forgets them.
    analysis.invalidate()
    code = TOKENS + "f = Name.\n"
    assert analysis.names(code, len(code) - 1, "/w/lexer.py", None) is None
    assert analysis.stats.queries == 4


def test_self_is_not_remembered_across_classes() -> None:
    analysis = Analysis(timeout=60)
    proxy = TOKENS.replace("        return list(self)", "        return self.")
    at = proxy.index("self.\n") + len("self.")
    assert analysis.names(proxy, at, "/w/lexer.py", None) is None
    assert analysis.stats.dynamic == 1
    code = TOKENS + "class Plain:\n    def run(self):\n        self.\n"
    names = analysis.names(code, len(code) - 1, "/w/lexer.py", None)
    assert names is not None and "run" in names and analysis.stats.proxies == 0
