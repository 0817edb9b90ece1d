"""The syntax monitor: never close a bracket that is not open, nor with the wrong kind.

Three parts:

- `LexState`: an immutable, incremental lexer state over UTF-8 bytes. It knows whether
  the text so far ends in code, in a string or in a comment, and which brackets are open.
  `feed(data)` returns the state after `data`; `closes_ok(data)` says whether `data`
  would close a bracket that is not open (or of the wrong kind).
- `initial_state(text_before_cursor)`: the state at the cursor. tree-sitter finds a
  statement start where the lexer state is known (code, nothing open); the lexer runs
  from there to the cursor.
- `SyntaxMonitor`: the Monitor that forbids the tokens whose bytes would close a bracket
  that is not open from the current state.

Lexing choices (Python 3.12 tokenizer rules, which are a superset of older ones here):

- String prefixes (r, b, u, f, t and their two-letter mixes, any case) count only when
  they make up the whole identifier right before the quote: `rb"` is a raw bytes
  string, `xr"` is a name and then a plain string.
- f-strings (and t-strings) are lexed as in PEP 701: `{` opens a replacement field
  whose contents are code with their own bracket nesting, `{{` is a literal brace, a
  `:` at the top level of a field starts the format spec (literal text in which `{`
  opens a nested field and `}` ends the field), and quotes inside a field open new
  strings even when they are the f-string's own quote. A field's `{` sits on the
  bracket stack as a longer entry: b"{" plus the string to return to (b'{f"', b"{rf'''",
  b'{:"' for a field opened inside a format spec). `entry[:1]` is always the bracket.
  A lone `}` in the literal part is a syntax error in Python but is treated as
  literal text (it may be the first half of `}}`), so it is never forbidden.
  `\\N{...}` in a non-raw f-string is a named escape, not a field.
- A single-quoted string ends at an unescaped newline: Python reports an unterminated
  string there, and the lexer goes back to code with the bracket stack it had before
  the string (what a reader of the next line expects). Backslash-newline continues it.
  A comment ends at a newline. Triple-quoted strings end at the first unescaped triple
  quote; a backslash escapes the next byte in every string, raw ones included (for
  quotes that is what Python does: r"\\"" is one string).
- A closing bracket that does not match (`feed` only; `closes_ok` says False): if the
  matching opener is further down the stack (not past an f-string field), everything
  above it is popped with it (an inner bracket was forgotten); otherwise the closer is
  ignored. The lexer never fails.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

import torch

from monitors.base import roll_back
from monitors.vocab import VocabIndex, derived

log = logging.getLogger(__name__)

CODE, STRING, COMMENT = "code", "string", "comment"

# Pending lookahead kinds (`LexState.pending`).
_OPENED = "open"    # string mode, right after an opening quote: `""` may be `"""`
_EMPTY = "empty"    # code mode, right after `""` / `''`: a third quote makes it triple
_BRACE = "brace"    # f-string literal part ended with `{`: `{{` or a field

# Escape kinds (`LexState.escape`).
_ESC, _ESC_N, _ESC_NAME = 1, 2, 3  # after `\`, after `\N`, inside `\N{...}`

_LPAR, _RPAR, _LSQB, _RSQB, _LBRACE, _RBRACE = b"()[]{}"
_QUOTE2, _QUOTE1, _HASH, _COLON, _BSLASH, _NL, _N = b"\"'#:\\\nN"
_OPENER = {_LPAR: b"(", _LSQB: b"[", _LBRACE: b"{"}
_MATCH = {_RPAR: _LPAR, _RSQB: _LSQB, _RBRACE: _LBRACE}
CLOSERS = b")]}"

# Bytes that continue an identifier (non-ASCII bytes belong to UTF-8 letters).
_IDENT = [chr(b).isalnum() or b == ord("_") or b >= 0x80 for b in range(256)]
_PREFIXES = frozenset({"", "r", "u", "b", "f", "t", "br", "rb", "fr", "rf", "tr", "rt"})
_NOT_PREFIX = "?"  # `LexState.word` inside an identifier that is not a string prefix

_CODE_SIG = re.compile(rb"[\"'#:()\[\]{}]")
# Bytes that matter inside a string, per (quote byte, f-string, triple).
_STRING_SIG = {
    (q, f, t): re.compile(b"[" + re.escape(bytes([q])) + rb"\\" + (b"" if t else rb"\n")
                          + (rb"{}" if f else b"") + b"]")
    for q in (_QUOTE1, _QUOTE2) for f in (False, True) for t in (False, True)
}
_NAME_END = re.compile(rb"[}\n'\"]")


@dataclass(frozen=True, slots=True)
class LexState:
    """Where Python's lexer stands after some bytes; immutable and hashable.

    mode: "code", "string" or "comment". In a string: `quote` (b"'", b'"', b"'''" or
    b'\"\"\"'), `raw`, `fstring` (f- or t-string) and `spec` (in the format spec of the
    innermost field); `escape` is a pending backslash (1), `\\N` (2) or `\\N{` (3).
    `pending` is a lookahead the next byte settles: "open" (string, right after the
    opening quote), "empty" (code, right after `""`; `quote` still holds the quote and
    flags in case a third quote makes it triple) or "brace" (f-string text ended in `{`). `word` is the identifier just before the end in code mode: "" when
    none, its lower-case letters while it can still be a string prefix, "?" otherwise.
    `run` counts closing quotes seen in a row in a triple-quoted string. `brackets` is
    the stack of open brackets, innermost last: b"(", b"[", b"{", or a longer entry
    starting with b"{" for an f-string replacement field.
    """

    mode: str = CODE
    quote: bytes = b""
    raw: bool = False
    fstring: bool = False
    spec: bool = False
    escape: int = 0
    pending: str = ""
    word: str = ""
    run: int = 0
    brackets: tuple[bytes, ...] = ()

    @property
    def depth(self) -> int:
        """How many brackets are open (f-string fields included)."""
        return len(self.brackets)

    @property
    def kinds(self) -> bytes:
        """The open brackets as bytes, innermost last: b"([{" (fields show as b"{")."""
        return b"".join(b[:1] for b in self.brackets)

    @property
    def in_code(self) -> bool:
        """True in code (f-string fields included), False in a string or comment."""
        return self.mode == CODE

    def feed(self, data: bytes) -> LexState:
        """Return the state after `data` (never fails; see the module doc)."""
        if not data:
            return self
        if len(data) > _FED_PIECE:
            state = _lex(self, data, strict=False)
            assert state is not None
            return state
        # A token's bytes: the syntax, name and call monitors each feed the same token from
        # the same state, and common (state, token) pairs come back in every request.
        key = (self, data)
        state = _FED.get(key)
        if state is None:
            state = _lex(self, data, strict=False)
            assert state is not None
            if len(_FED) >= FED_SIZE:
                _FED.clear()
            _FED[key] = state
        return state

    def closes_ok(self, data: bytes) -> bool:
        """False when `data` would close a bracket that is not open, or of another kind."""
        return not data or _lex(self, data, strict=True) is not None

    def truncated(self, keep: int) -> LexState:
        """This state with only the innermost `keep` brackets (a cache key for `keep` closes)."""
        if len(self.brackets) <= keep:
            return self
        return replace(self, brackets=self.brackets[len(self.brackets) - keep:])


# `LexState.feed` results for token-sized inputs; cleared when full (dict operations are
# atomic under the GIL, and a lost entry only costs a lex).
FED_SIZE = 1 << 14
_FED_PIECE = 64
_FED: dict[tuple[LexState, bytes], LexState] = {}


def _field_entry(quote: bytes, raw: bool, spec: bool) -> bytes:
    """The stack entry for a replacement field opened in this string context."""
    return b"{" + (b"r" if raw else b"") + (b":" if spec else b"") + quote


def _field_context(entry: bytes) -> tuple[bytes, bool, bool]:
    """(quote, raw, spec) of the string a field entry returns to."""
    rest = entry[1:]
    raw = rest[:1] == b"r"
    if raw:
        rest = rest[1:]
    spec = rest[:1] == b":"
    if spec:
        rest = rest[1:]
    return rest, raw, spec


def _word_before(data: bytes, end: int, start: int, base: str) -> str:
    """The identifier ending at `end` as `LexState.word`; a run reaching `start` extends `base`."""
    k = end
    limit = max(start, end - 3)  # a string prefix has at most two letters
    while k > limit and _IDENT[data[k - 1]]:
        k -= 1
    if end - k >= 3:
        return _NOT_PREFIX
    word = data[k:end].decode("latin-1").lower()
    if k == start:
        word = base + word
    return word if word in _PREFIXES else _NOT_PREFIX


def _lex(s: LexState, data: bytes, strict: bool) -> LexState | None:
    """Run the lexer over `data`; None when `strict` and a closer does not match."""
    mode, quote, raw, fstr, spec = s.mode, s.quote, s.raw, s.fstring, s.spec
    esc, pend, run = s.escape, s.pending, s.run
    stack = list(s.brackets)
    n = len(data)
    i = 0
    # An identifier run that starts at `wpos` continues the word `wbase` (code mode).
    wpos, wbase = 0, s.word

    while i < n:
        if mode == CODE:
            if pend:  # _EMPTY: after `""`; `quote` holds the quote byte and flags
                pend = ""
                if data[i] == quote[0]:
                    mode, quote, run = STRING, quote * 3, 0
                    i += 1
                    continue
                quote, raw, fstr = b"", False, False
                wpos, wbase = i, ""
            m = _CODE_SIG.search(data, i)
            if m is None:
                break
            j = m.start()
            c = data[j]
            i = j + 1
            if c == _QUOTE1 or c == _QUOTE2:
                word = _word_before(data, j, wpos, wbase)
                if word == _NOT_PREFIX:
                    raw = fstr = False
                else:
                    raw, fstr = "r" in word, "f" in word or "t" in word
                mode, quote, pend, run, esc, spec = STRING, data[j:i], _OPENED, 0, 0, False
            elif c == _HASH:
                mode = COMMENT
            elif c == _COLON:
                if stack and len(stack[-1]) > 1:  # top level of a field: the format spec
                    quote, raw, _ = _field_context(stack[-1])
                    mode, fstr, spec, esc, run = STRING, True, True, 0, 0
            elif c in _OPENER:
                stack.append(_OPENER[c])
            else:
                want = _MATCH[c]
                if stack and stack[-1][0] == want:
                    top = stack.pop()
                else:
                    if strict:
                        return None
                    top = _recover(stack, want)
                if top is not None and len(top) > 1:  # a field ends: back in its string
                    quote, raw, spec = _field_context(top)
                    mode, fstr, esc, run = STRING, True, 0, 0

        elif mode == STRING:
            if esc:
                c = data[i]
                if esc == _ESC:
                    if fstr and (c == _LBRACE or c == _RBRACE):
                        esc = 0  # braces are not escaped by a backslash: handle below
                    elif fstr and not raw and c == _N:
                        esc = _ESC_N
                        i += 1
                        continue
                    else:
                        esc = 0
                        i += 1
                        continue
                elif esc == _ESC_N:
                    esc = 0
                    if c == _LBRACE:
                        esc = _ESC_NAME
                        i += 1
                        continue
                else:  # inside \N{...}: up to `}` (a quote or newline ends it early)
                    m = _NAME_END.search(data, i)
                    if m is None:
                        break
                    esc = 0
                    if data[m.start()] == _RBRACE:
                        i = m.end()
                        continue
                    i = m.start()
            if pend:
                c = data[i]
                if pend == _OPENED:
                    pend = ""
                    if c == quote[0]:  # `""`: empty, unless a third quote follows
                        mode, pend = CODE, _EMPTY
                        i += 1
                        continue
                else:  # _BRACE
                    pend = ""
                    if c == _LBRACE:  # `{{`: a literal brace
                        i += 1
                        continue
                    stack.append(_field_entry(quote, raw, spec))
                    mode, quote, raw, fstr, spec = CODE, b"", False, False, False
                    wpos, wbase = i, ""
                    continue
            triple = len(quote) == 3
            qc = quote[0]
            m = _STRING_SIG[(qc, fstr, triple)].search(data, i)
            if m is None:
                run = 0
                break
            j = m.start()
            if j > i:
                run = 0
            c = data[j]
            i = j + 1
            if c == qc or c == _NL:  # (a newline only matches in single-quoted strings)
                if c == qc and triple and run < 2:
                    run += 1
                    continue
                # The string ends (or is cut by a newline); in a spec, so does the field.
                if spec and stack and len(stack[-1]) > 1:
                    stack.pop()
                mode, quote, raw, fstr, spec, run = CODE, b"", False, False, False, 0
                wpos, wbase = i, ""
            elif c == _BSLASH:
                esc, run = _ESC, 0
            elif c == _LBRACE:
                run = 0
                if not spec and i < n and data[i] == _LBRACE:
                    i += 1  # `{{`
                elif not spec and i == n:
                    pend = _BRACE
                else:
                    stack.append(_field_entry(quote, raw, spec))
                    mode, quote, raw, fstr, spec = CODE, b"", False, False, False
                    wpos, wbase = i, ""
            else:  # `}`: ends a format spec and its field; literal text otherwise
                run = 0
                if spec:
                    if stack and len(stack[-1]) > 1:
                        quote, raw, spec = _field_context(stack.pop())
                    else:  # cannot happen from a consistent state; leave the string
                        mode, quote, raw, fstr, spec = CODE, b"", False, False, False
                        wpos, wbase = i, ""

        else:  # COMMENT
            k = data.find(b"\n", i)
            if k < 0:
                break
            mode = CODE
            i = k + 1
            wpos, wbase = i, ""

    word = ""
    if mode == CODE and not pend:
        word = _word_before(data, n, wpos, wbase)
    return LexState(mode, quote, raw, fstr, spec, esc, pend, word, run, tuple(stack))


def _recover(stack: list[bytes], want: int) -> bytes | None:
    """Pop down to the innermost opener of kind `want` (not past a field); None if none."""
    for k in range(len(stack) - 1, -1, -1):
        entry = stack[k]
        if entry[0] == want:
            del stack[k:]
            return entry
        if len(entry) > 1:
            return None
    return None


# ---------------------------------------------------------------------------------------
# The state at the cursor.

# Never parse or lex more than this many bytes before the cursor.
WINDOW = 100_000
# Lines (at most FALLBACK_BYTES) lexed from code mode when tree-sitter fails.
FALLBACK_LINES = 200
FALLBACK_BYTES = 32_000
# Longest a tree-sitter parse may take (real code: about 10 ms per 100 KB on one core).
PARSE_BUDGET_S = 0.025

# A line that starts a top-level definition: where a window can start safely (a line
# like this is never inside brackets and rarely inside a string).
_ANCHOR = re.compile(rb"^(?:(?:async[ \t]+)?def[ \t]+\w+[ \t]*[(\[]|class[ \t]+\w+[ \t]*[(:\[]"
                     rb"|@[A-Za-z_][\w.]*[ \t]*(?:\(|\r?$))", re.M)

# Nodes whose last child may be a block (or a clause holding one).
_COMPOUND = frozenset({
    "if_statement", "elif_clause", "else_clause", "for_statement", "while_statement",
    "try_statement", "except_clause", "except_group_clause", "finally_clause",
    "with_statement", "function_definition", "class_definition", "decorated_definition",
    "match_statement", "case_clause",
})

_local = threading.local()  # a tree-sitter Parser per thread (parsers are not thread-safe)


def _parser():  # -> tree_sitter.Parser
    parser = getattr(_local, "parser", None)
    if parser is None:
        import tree_sitter_python
        from tree_sitter import Language, Parser

        parser = _local.parser = Parser(Language(tree_sitter_python.language()))
    return parser


def initial_state(text_before_cursor: str) -> LexState:
    """Return the lexer state at the cursor (never raises).

    Only the last `WINDOW` bytes are looked at; a longer text is cut at the first line
    in that window that starts a top-level `def`, `class` or decorator. tree-sitter
    parses the window (within `PARSE_BUDGET_S`) and picks the start of the innermost
    statement that holds the cursor (descending into blocks) when everything before it
    at its level, and its enclosing headers, parsed without error; after an error it
    picks the first erroneous statement instead. There the lexer is in code with
    nothing open, and it runs from there to the cursor. If anything fails, the last
    `FALLBACK_LINES` lines (at most `FALLBACK_BYTES`) are lexed from code mode.
    """
    try:
        data = _window(text_before_cursor)
        return LexState().feed(data[_safe_start(data):])
    except Exception:  # noqa: BLE001 - any failure: the cheap fallback below
        log.debug("syntax: tree-sitter start failed; lexing the last lines", exc_info=True)
    try:
        return LexState().feed(_last_lines(text_before_cursor))
    except Exception:  # noqa: BLE001
        log.debug("syntax: fallback lexing failed", exc_info=True)
        return LexState()


def _window(text: str) -> bytes:
    """The UTF-8 bytes to parse: all of `text`, or a tail that starts at a safe line."""
    tail = text[-WINDOW:]
    data = tail.encode("utf-8", "surrogatepass")
    if len(tail) == len(text) and len(data) <= WINDOW:
        return data
    data = data[-WINDOW:]
    first_line = data.find(b"\n") + 1  # the first line may be partial
    m = _ANCHOR.search(data, first_line) if first_line else None
    return data[m.start() if m else first_line:]


def _last_lines(text: str) -> bytes:
    tail = text[-FALLBACK_BYTES:]
    data = tail.encode("utf-8", "surrogatepass")
    whole = len(tail) == len(text) and len(data) <= FALLBACK_BYTES
    data = data[-FALLBACK_BYTES:]
    cut = len(data)
    for _ in range(FALLBACK_LINES):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            # All of it when it is all of the text; else from the first whole line.
            return data if whole else data[data.find(b"\n") + 1:]
    return data[cut + 1:]


def _safe_start(data: bytes) -> int:
    """A byte offset in `data` where the lexer is in code with nothing open."""
    view = memoryview(data)
    deadline = time.perf_counter() + PARSE_BUDGET_S
    # A read callback is what lets tree-sitter report progress, and so be cancelled
    # (pathological text can take far longer to parse than real code).
    tree = _parser().parse(lambda offset, _point: view[offset:offset + 65536],
                           progress_callback=lambda _offset, _error: time.perf_counter() > deadline)
    if tree is None:
        raise TimeoutError("tree-sitter parse cancelled")
    return _start_in(tree.root_node, len(data))


def _is_clean(node) -> bool:
    """A statement (or comment) that parsed without error: code, nothing open, after it."""
    t = node.type
    return not node.has_error and (t == "comment" or t.endswith("_statement")
                                   or t.endswith("_definition") or t == "case_clause")


def _last_before(kids: list, cursor: int) -> int:
    k = len(kids) - 1
    while k >= 0 and kids[k].start_byte >= cursor:
        k -= 1
    return k


def _start_in(container, cursor: int) -> int:
    """Safe start in a module, block (or an ERROR root): the cursor's statement, or earlier.

    The start is the child that holds the cursor when every child before it is a clean
    statement; otherwise the first child that is not. After a parse error nothing later
    at this level can be trusted (an unterminated triple-quoted string makes its text
    parse as clean statements), while the clean statements before it put the lexer in
    code with nothing open.
    """
    kids = container.children
    k = _last_before(kids, cursor)
    if k < 0:
        return container.start_byte
    for j in range(k):
        if not _is_clean(kids[j]):
            return kids[j].start_byte
    node = kids[k]
    if node.type in _COMPOUND:
        return _start_in_compound(node, cursor)
    return node.start_byte


def _start_in_compound(node, cursor: int) -> int:
    """Safe start in a compound statement: inside its last block if its header is clean."""
    kids = node.children
    k = _last_before(kids, cursor)
    if k < 0 or any(kid.has_error for kid in kids[:k]):
        return node.start_byte
    last = kids[k]
    if last.type == "block":
        return _start_in(last, cursor)
    if last.type in _COMPOUND:  # a clause (else, except, case...) or a decorated definition
        return _start_in_compound(last, cursor)
    return node.start_byte


# ---------------------------------------------------------------------------------------
# The monitor.

MASK_CACHE_SIZE = 512


class _Tables:
    """Per vocabulary: the tokens that can close a bracket, and masks cached per state."""

    def __init__(self, index: VocabIndex) -> None:
        groups: dict[bytes, list[int]] = {}
        reach = 0
        for i in range(index.vocab_size):
            piece = index.token_bytes(i)
            if piece and any(c in piece for c in CLOSERS):
                groups.setdefault(_signature(piece), []).append(i)
                reach = max(reach, sum(piece.count(c) for c in CLOSERS))
        # One representative per signature: tokens with equal signatures lex alike.
        self.groups: list[tuple[bytes, list[int]]] = [
            (index.token_bytes(ids[0]), ids) for ids in groups.values()]
        self.ids: list[int] = sorted(i for _, ids in self.groups for i in ids)
        self.reach = reach  # most closers in one token: how deep a token can see
        self.vocab_size = index.vocab_size
        self._cache: OrderedDict[LexState, torch.Tensor | None] = OrderedDict()
        self._lock = threading.Lock()

    def mask(self, state: LexState) -> torch.Tensor | None:
        key = state.truncated(self.reach)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        forbidden = [i for piece, ids in self.groups if not key.closes_ok(piece) for i in ids]
        mask = None
        if forbidden:
            mask = torch.ones(self.vocab_size, dtype=torch.bool)  # [V]
            mask[forbidden] = False
        with self._lock:
            self._cache[key] = mask
            while len(self._cache) > MASK_CACHE_SIZE:
                self._cache.popitem(last=False)
        return mask


# Bytes the lexer looks at keep their value; other identifier bytes become b"x", the
# rest b" ", and runs of either collapse (a run lexes like one such byte).
_SIG_TABLE = bytes(
    b if b in b"\"'#:()[]{}\\\nrbfutRBFUTN" else (ord("x") if _IDENT[b] else ord(" "))
    for b in range(256))
_SIG_RUNS = re.compile(rb"x+|[ ]+")


def _signature(piece: bytes) -> bytes:
    return _SIG_RUNS.sub(lambda m: m[0][:1], piece.translate(_SIG_TABLE))


def closing_tables(index: VocabIndex) -> _Tables:
    """The closing-bracket token tables of `index` (built once per index)."""
    return derived(index, _Tables)


class SyntaxMonitor:
    """Forbid tokens that would close a bracket that is not open, or with the wrong kind.

    Only tokens whose bytes hold `)`, `]` or `}` can be forbidden, and each is checked by
    lexing its bytes from the current state (`")` may close a string, then the paren).
    Masks are cached per state (with the bracket stack cut to what a token can reach)
    and shared: never change them in place. The monitor constrains for the whole draft,
    so `done` stays False. Accepting a token the mask forbade does not fail the monitor:
    the lexer recovers (module doc) and keeps constraining.
    """

    def __init__(self, index: VocabIndex, state: LexState | None = None) -> None:
        self._index = index
        self._tables = closing_tables(index)
        # State after each accepted token; [0] is the start, so rollback(n) is n pops.
        self._states: list[LexState] = [LexState() if state is None else state]

    @property
    def done(self) -> bool:
        """Always False: brackets are checked for the whole draft."""
        return False

    @property
    def state(self) -> LexState:
        """The lexer state after the accepted tokens."""
        return self._states[-1]

    @property
    def in_code(self) -> bool:
        """True when the accepted text ends in code (not in a string or comment)."""
        return self._states[-1].mode == CODE

    def allowed(self) -> torch.Tensor | None:
        """Return the mask [V] without the tokens that would close wrongly, or None."""
        return self._tables.mask(self._states[-1])

    def accept(self, token_id: int) -> None:
        """Advance by one generated token."""
        self._states.append(self._states[-1].feed(self._index.token_bytes(token_id)))

    def rollback(self, n: int) -> None:
        """Undo the last n accepted tokens exactly."""
        roll_back(self._states, n)

    def fork(self) -> SyntaxMonitor:
        """Return an independent copy with the same state."""
        other = SyntaxMonitor.__new__(SyntaxMonitor)
        other._index = self._index
        other._tables = self._tables
        other._states = list(self._states)
        return other
