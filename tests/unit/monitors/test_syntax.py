"""The syntax monitor: the lexer by hand, initial_state against Python's tokenize, masks by brute force."""

from __future__ import annotations

import io
import random
import time
import tokenize
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monitors import syntax
from monitors.base import Monitor
from monitors.syntax import LexState, SyntaxMonitor, closing_tables, initial_state
from monitors.vocab import VocabIndex

Pieces = list[tuple[int, bytes]]

STDLIB = Path(tokenize.__file__).parent
# Real modules with docstrings, comments, raw strings, f-strings and long bracketed calls.
MODULES = ["argparse.py", "textwrap.py", "dataclasses.py", "json/decoder.py", "tokenize.py",
           "string.py", "email/message.py", "inspect.py"]


def lex(data: bytes) -> LexState:
    return LexState().feed(data)


def outer_kinds(state: LexState) -> bytes:
    """The open brackets below the first f-string field (what a 3.11 tokenizer sees)."""
    kinds = b""
    for entry in state.brackets:
        if len(entry) > 1:
            break
        kinds += entry
    return kinds


# ---------------------------------------------------------------------------------------
# The lexer.

# (source, mode, open brackets as seen through `kinds`, quote)
CASES = [
    (b"foo(bar[1", "code", b"([", b""),
    (b"foo(bar[1], {'a': (2", "code", b"({(", b""),
    (b"x = '(['", "code", b"", b""),
    (b"x = '(['", "code", b"", b""),
    (b"x = '([", "string", b"", b"'"),
    (b'x = "([\\"" + (', "code", b"(", b""),            # escaped quote in the string
    (b'x = ("a\\\\", ', "code", b"(", b""),              # escaped backslash, then the quote closes
    (b"s = '''a\n(b\n", "string", b"", b"'''"),
    (b"s = ('''a\n)b''' [", "code", b"([", b""),
    (b"s = '''it's \"(\" '' ok", "string", b"", b"'''"),   # lone quotes inside a triple string
    (b'""', "code", b"", b'"'),                          # empty string (a third quote makes a triple)
    (b'"""', "string", b"", b'"""'),
    (b'""""""(', "code", b"(", b""),                     # empty triple-quoted string
    (b'"""a""""', "string", b"", b'"'),                   # closes at the first triple, then opens
    (b"# (\n(", "code", b"(", b""),
    (b"foo(  # ) ] }\n", "code", b"(", b""),
    (b"x = 1  # ( '", "comment", b"", b""),
    (b"r'\\'(", "string", b"", b"'"),                      # a backslash keeps the quote in a raw string
    (b"r'\\\\' (", "code", b"(", b""),
    (b"rb'\\d+)' [", "code", b"[", b""),
    (b"b'(' + B\"[\" (", "code", b"(", b""),
    (b"x = ('abc\n", "code", b"(", b""),                   # unterminated: ends at the newline
    (b"x = ('abc\\\n", "string", b"(", b"'"),               # backslash-newline continues it
    (b"f'{x[0]}' (", "code", b"(", b""),
    (b"f'{x[0", "code", b"{[", b""),                       # in a field: code with its own nesting
    (b"f'{x[0]} and (", "string", b"", b"'"),
    (b"f'{{(}}' (", "code", b"(", b""),                    # doubled braces are literal
    (b"f'{{", "string", b"", b"'"),
    (b"f'{x:>{w}}' [", "code", b"[", b""),                 # nested field in a format spec
    (b"f'{x:>{w", "code", b"{{", b""),
    (b"f'{x:>(", "string", b"{", b"'"),                    # `(` in a spec is text
    (b"f'{x!r}' + f\"{y['a']}\" + (", "code", b"(", b""),
    (b"f'{d['k']}' (", "code", b"(", b""),                 # PEP 701: quotes reused in a field
    (b"f'{x}' ) (", "code", b"(", b""),                    # an unmatched `)` is ignored
    (b"f'\\N{DASH} (", "string", b"", b"'"),               # a named escape, not a field
    (b"rf'\\N{x", "code", b"{", b""),                      # raw: `\N` is text, `{` opens a field
    (b"f'a\\{x", "code", b"{", b""),                       # a backslash does not escape a brace
    (b"xf'{'", "code", b"", b""),                           # `xf` is a name: a plain string
    (b"f'{'", "string", b"{", b"'"),                        # a string opens inside the field
    (b"print('x' if a else \"y\", [", "code", b"([", b""),
    (b"([)", "code", b"", b""),                             # `)` pops the forgotten `[` with it
    (b"(]", "code", b"(", b""),                             # nothing to match: ignored
    (b"t = {'a': [1, 2], 'b': (3,", "code", b"{(", b""),
]


@pytest.mark.parametrize(("source", "mode", "kinds", "quote"), CASES)
def test_lexer_cases(source: bytes, mode: str, kinds: bytes, quote: bytes) -> None:
    state = lex(source)
    assert (state.mode, state.kinds, state.quote) == (mode, kinds, quote)
    assert state.in_code == (mode == "code")
    assert state.depth == len(kinds)
    hash(state)  # usable as a cache key
    # Byte by byte gives the same state: the lexer is incremental.
    one_by_one = LexState()
    for b in source:
        one_by_one = one_by_one.feed(bytes([b]))
    assert one_by_one == state


def test_field_entries_remember_their_string() -> None:
    state = lex(b"rf'''{x:{")
    assert state.kinds == b"{{" and state.mode == "code"
    assert state.brackets == (b"{r'''", b"{r:'''")
    back = state.feed(b"w}")
    assert (back.mode, back.spec, back.raw, back.fstring, back.quote) == ("string", True, True, True, b"'''")
    assert back.feed(b"}").brackets == () and back.feed(b"}").mode == "string"
    assert back.feed(b"}'''").mode == "code"


def test_string_prefixes() -> None:
    assert lex(b"rb'").raw and not lex(b"rb'").fstring
    assert lex(b"Rf'").raw and lex(b"Rf'").fstring
    assert lex(b"t'").fstring  # template strings lex like f-strings
    assert not lex(b"xr'").raw and not lex(b"bar'").raw and not lex(b"rrr'").raw
    assert not lex(b"1f'").fstring
    assert lex(b"a.f'").fstring
    # A prefix split across feeds still counts.
    assert lex(b"r").feed(b"b'").raw
    assert not lex(b"x").feed(b"r'").raw


def test_closes_ok() -> None:
    assert not LexState().closes_ok(b")")
    assert LexState().closes_ok(b"(x)")
    assert LexState().closes_ok(b"")
    state = lex(b"foo(bar[1")
    assert not state.closes_ok(b")")
    assert state.closes_ok(b"]")
    assert state.closes_ok(b"])")
    assert not state.closes_ok(b"]))")
    assert not state.closes_ok(b"}")
    in_string = lex(b"x = '")
    assert in_string.closes_ok(b")")
    assert not in_string.closes_ok(b"')")  # closes the string, then a paren nothing opened
    assert lex(b"('").closes_ok(b"')")
    assert lex(b"# ").closes_ok(b")]}")
    assert not lex(b"(# ").closes_ok(b"\n])")
    assert lex(b"f'{").closes_ok(b"}")     # closes the field
    assert not lex(b"f'{").closes_ok(b")")
    assert lex(b"(f'").closes_ok(b"}')")   # a lone `}` in the text is not a bracket
    # closes_ok never changes the state, and agrees with what feed recovers from.
    assert state.feed(b"]").kinds == b"("


PIECES = [b"(", b")", b"[", b"]", b"{", b"}", b"'", b'"', b"'''", b'"""', b"#", b"\n", b"\\",
          b":", b"f", b"r", b"b", b"x", b"N", b" ", b"=", b"\xc3\xa9"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.data())
def test_feeding_in_chunks_is_feeding_at_once(pieces: list[bytes], data: st.DataObject) -> None:
    text = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    state = LexState()
    for a, b in zip([0, *cuts], [*cuts, len(text)]):
        state = state.feed(text[a:b])
    assert state == lex(text)
    # closes_ok is prefix-closed and composes with feed.
    if LexState().closes_ok(text) and cuts:
        assert LexState().closes_ok(text[:cuts[0]])
        assert lex(text[:cuts[0]]).closes_ok(text[cuts[0]:])


# ---------------------------------------------------------------------------------------
# initial_state against Python's own tokenizer.


@pytest.fixture(autouse=True)
def _unhurried_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """tree-sitter gets all the time it needs here. These tests check where it starts the
    lexer; on a loaded machine its 25 ms budget would send some cuts to the fallback, and
    the result would depend on the machine's load, not on the code."""
    monkeypatch.setattr(syntax, "PARSE_BUDGET_S", 60.0)


def tokenize_oracle(prefix: str) -> tuple[int, str] | None:
    """(open brackets, mode) at the end of `prefix` by the stdlib tokenizer, or None.

    Python 3.11's tokenize sees an f-string as one STRING token; an unterminated
    single-quoted string shows as an ERRORTOKEN quote and a triple-quoted one as a
    "multi-line string" error.
    """
    depth, last = 0, None
    lines = prefix.split("\n")
    end = (len(lines), len(lines[-1]))
    try:
        for tok in tokenize.generate_tokens(io.StringIO(prefix).readline):
            if tok.type == tokenize.ERRORTOKEN:
                if tok.string[-1:] in ("'", '"'):
                    return depth, "string"
                if tok.string.strip():
                    return None
                continue
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            if tok.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
                                tokenize.ENDMARKER):
                last = tok
    except tokenize.TokenError as e:
        if "multi-line string" in e.args[0]:
            return depth, "string"
        if "multi-line statement" not in e.args[0]:
            return None
    except SyntaxError:
        return None
    if last is not None and last.type == tokenize.COMMENT and last.end == end:
        return depth, "comment"
    return depth, "code"


def source(name: str) -> str:
    return (STDLIB / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", MODULES)
def test_initial_state_matches_tokenize_on_cut_modules(name: str) -> None:
    text = source(name)
    rng = random.Random(name)
    compared = 0
    for cut in [rng.randrange(len(text)) for _ in range(60)]:
        prefix = text[:cut]
        state = initial_state(prefix)
        # Starting at a statement that tree-sitter found gives what lexing it all gives.
        assert state == lex(prefix.encode()), (name, cut, prefix[-80:])
        expected = tokenize_oracle(prefix)
        if expected is None:
            continue
        compared += 1
        if any(len(entry) > 1 for entry in state.brackets):  # inside an f-string field
            assert (len(outer_kinds(state)), "string") == expected, (name, cut, prefix[-80:])
        else:
            assert (state.depth, state.mode) == expected, (name, cut, prefix[-80:])
    assert compared >= 50


def test_initial_state_at_every_bracket_and_quote_of_a_module() -> None:
    text = source("textwrap.py")
    cuts = [i for i, c in enumerate(text) if c in "()[]{}'\"#\n"][::13]
    for cut in cuts:
        for end in (cut, cut + 1):
            prefix = text[:end]
            assert initial_state(prefix) == lex(prefix.encode()), (end, prefix[-60:])


def test_inside_a_docstring() -> None:
    text = source("textwrap.py")
    cut = text.index("Wrap a single paragraph of text") + 10
    state = initial_state(text[:cut])
    assert (state.mode, state.quote, state.depth) == ("string", b'"""', 0)
    # Lines of the docstring that look like code (brackets, quotes) do not matter.
    prefix = 'class A:\n    def f(self):\n        """Doc (\n        x = foo("\n        more ['
    state = initial_state(prefix)
    assert (state.mode, state.quote, state.depth) == ("string", b'"""', 0)


def test_inside_a_comment_and_in_partial_code() -> None:
    state = initial_state("def f(x):\n    return g(x,  # a comment (\n")
    assert (state.mode, state.kinds) == ("code", b"(")
    state = initial_state("def f(x):\n    y = [x,  # a comment ( '")
    assert (state.mode, state.kinds) == ("comment", b"[")
    state = initial_state("import os\n\n\ndef f(a, b):\n    return foo(bar[1")
    assert (state.mode, state.kinds) == ("code", b"([")
    state = initial_state("x = 1\nprint(f'{x[0")
    assert (state.mode, state.kinds) == ("code", b"({[")
    state = initial_state("x = {\n    'a': (1,\n")
    assert (state.mode, state.kinds) == ("code", b"{(")


def test_a_huge_prefix_is_cut_and_stays_right() -> None:
    module = source("inspect.py")
    big = (module + "\n") * (4_000_000 // len(module) + 1)
    for tail in ("", "def f(a, b):\n    return foo(bar[1", 'x = """doc (\n'):
        prefix = big[:4_000_000] + tail
        t0 = time.perf_counter()
        state = initial_state(prefix)
        elapsed = time.perf_counter() - t0
        assert state == lex(prefix.encode())
        assert elapsed < 1.0  # about 10 ms; only a catastrophe fails this (speed is benchmarked)


@pytest.mark.parametrize("text", [None, 42, "", "\x00" * 10_000, "x = '\ud800(", "(" * 200_000,
                                  "'" * 200_000, "😀(" * 100_000, "f'{" * 50_000,
                                  "\n" * 200_000 + "(", "\t\tdef f(:\n  ]]]\n"])
def test_odd_input_never_raises(text: object) -> None:
    state = initial_state(text)  # type: ignore[arg-type]
    assert isinstance(state, LexState)


def test_falls_back_to_the_last_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("no tree-sitter")

    monkeypatch.setattr(syntax, "_parser", broken)
    state = initial_state("import os\n\ndef f():\n    return g(h[1")
    assert (state.mode, state.kinds) == ("code", b"([")


# ---------------------------------------------------------------------------------------
# The monitor on the real SmolLM2 vocabulary.


def only(index: VocabIndex, data: bytes) -> int:
    ids = index.ids_of(data)
    assert ids, data
    return ids[0]


def forbidden(monitor: SyntaxMonitor) -> set[int]:
    mask = monitor.allowed()
    return set() if mask is None else set((~mask).nonzero().flatten().tolist())


def test_is_a_monitor(smol_index: VocabIndex) -> None:
    monitor = SyntaxMonitor(smol_index, LexState())
    assert isinstance(monitor, Monitor)
    assert not monitor.done
    mask = monitor.allowed()
    assert mask is not None and mask.dtype == torch.bool and mask.shape == (smol_index.vocab_size,)


def test_brackets_after_an_open_call(smol_index: VocabIndex) -> None:
    monitor = SyntaxMonitor(smol_index, initial_state("x = foo(bar[1"))
    mask = monitor.allowed()
    assert mask is not None
    assert not mask[only(smol_index, b")")]
    assert mask[only(smol_index, b"]")]
    assert mask[only(smol_index, b"])")]
    assert not mask[only(smol_index, b"]))")]
    assert not mask[only(smol_index, b"}")]
    assert mask[only(smol_index, b"(")] and mask[only(smol_index, b" +")]
    assert mask[smol_index.special].all()  # EOS and friends are never this monitor's business


def test_nothing_open_forbids_closers(smol_index: VocabIndex) -> None:
    monitor = SyntaxMonitor(smol_index, initial_state("x = 1\ny = "))
    mask = monitor.allowed()
    assert mask is not None
    for piece in (b")", b"]", b"}", b"))", b"),"):
        assert not mask[only(smol_index, piece)], piece
    assert mask[only(smol_index, b"()")]
    assert mask[only(smol_index, b"'):")]  # the quote opens a string: the rest is text


def test_inside_a_string_or_comment_closers_are_text(smol_index: VocabIndex) -> None:
    monitor = SyntaxMonitor(smol_index, initial_state("x = 'a"))
    assert not monitor.in_code
    mask = monitor.allowed()
    assert mask is None or (mask[only(smol_index, b")")] and mask[only(smol_index, b"]")])
    assert mask is not None and not mask[only(smol_index, b"')")]  # ends the string, then `)`
    in_comment = SyntaxMonitor(smol_index, initial_state("x = 1  # see ("))
    mask = in_comment.allowed()
    assert mask is None or mask[only(smol_index, b")")]


def test_a_quote_then_a_paren_closes_the_string_first(smol_index: VocabIndex) -> None:
    monitor = SyntaxMonitor(smol_index, initial_state("print('a"))
    mask = monitor.allowed()
    assert mask is None or mask[only(smol_index, b"')")]
    monitor.accept(only(smol_index, b"')"))
    assert monitor.in_code and monitor.state.depth == 0


def test_rollback_then_reaccept_gives_the_same_state(smol_index: VocabIndex) -> None:
    monitor = SyntaxMonitor(smol_index, initial_state("def f(x):\n    return g("))
    start = monitor.state
    tokens = [only(smol_index, p) for p in (b"x", b"[", b"'", b"a", b"]", b"'", b"])")]
    states = []
    for t in tokens:
        monitor.accept(t)
        states.append(monitor.state)
    assert monitor.state.kinds == b""
    monitor.rollback(4)
    assert monitor.state == states[2] and monitor.state.mode == "string"
    for t in tokens[3:]:
        monitor.accept(t)
    assert monitor.state == states[-1]
    monitor.rollback(len(tokens))
    assert monitor.state == start
    with pytest.raises(ValueError):
        monitor.rollback(1)


def test_fork_is_independent(smol_index: VocabIndex) -> None:
    monitor = SyntaxMonitor(smol_index, initial_state("foo(bar[1"))
    other = monitor.fork()
    other.accept(only(smol_index, b"]"))
    assert monitor.state.kinds == b"([" and other.state.kinds == b"("
    monitor.accept(only(smol_index, b"("))
    assert monitor.state.kinds == b"([(" and other.state.kinds == b"("
    other.rollback(1)
    assert other.state == initial_state("foo(bar[1")
    assert monitor.state.kinds == b"([("


def test_accepting_a_forbidden_token_recovers(smol_index: VocabIndex) -> None:
    monitor = SyntaxMonitor(smol_index, LexState())
    monitor.accept(only(smol_index, b")"))
    assert monitor.state == LexState() and monitor.allowed() is not None


STATES = [b"", b"x = foo(bar[1", b"x = '", b"s = '''doc (", b"# comment (", b"f'{a[", b"f'{x:",
          b"f'{x", b"(rf'''{x:{y", b"[[[[[[", b"({[(", b"print(f'a", b"(f'{{", b"r", b"(\"\"",
          b"(\"a\\", b"(f'\\N"]


@pytest.mark.parametrize("prefix", STATES)
def test_mask_is_exactly_what_closes_ok_allows(smol_index: VocabIndex, smol_pieces: Pieces,
                                                prefix: bytes) -> None:
    state = lex(prefix)
    expected = {i for i, piece in smol_pieces if not state.closes_ok(piece)}
    assert forbidden(SyntaxMonitor(smol_index, state)) == expected
    # Only tokens holding a closing bracket can ever be forbidden.
    assert all(any(c in smol_index.token_bytes(i) for c in b")]}") for i in expected)


def test_masks_are_cached_per_reachable_state(smol_index: VocabIndex) -> None:
    tables = closing_tables(smol_index)
    assert tables is closing_tables(smol_index)
    assert 1 <= tables.reach <= 8
    deep = lex(b"(" * 50 + b"[" * tables.reach)
    deeper = lex(b"{" * 80 + b"[" * tables.reach)
    assert SyntaxMonitor(smol_index, deep).allowed() is SyntaxMonitor(smol_index, deeper).allowed()
    assert SyntaxMonitor(smol_index, lex(b"[")).allowed() is not SyntaxMonitor(smol_index, lex(b"(")).allowed()
