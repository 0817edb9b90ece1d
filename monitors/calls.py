"""The call monitor: keyword names that the callee accepts, and no `)` before the required arguments.

Inside a call whose signature jedi knows (a call typed by the model, or the one the cursor
already sits in), at the call's own bracket level:

- a keyword argument names a parameter that the call can still take: `open(p, encodng=`
  is blocked at the `=`, and so is a parameter already given positionally or by name
  (unless the callee takes `**kwargs`);
- the call is not closed while a required parameter is missing: `json.dumps(` may not go on
  with `)` (with overloads, closing is fine when one of them is satisfied).

A call with `*args` or `**kwargs` in it, or whose signature jedi cannot give, is left
alone (stepped aside). Strings, comments and nested brackets inside an argument are free.
"""

from __future__ import annotations

import keyword
import re
import threading
import time
from dataclasses import dataclass, replace

import torch

from monitors.analysis import Analysis, Signature, closing
from monitors.base import roll_back
from monitors.names import MonitorStats
from monitors.syntax import LexState, closing_tables, initial_state
from monitors.vocab import VocabIndex, derived

_KEYWORD_ARG = re.compile(rb"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)")
_LONE_IDENT = re.compile(rb"\s*([A-Za-z_][A-Za-z0-9_]*)\Z")
_CALLEE_END = re.compile(rb"(?:[A-Za-z0-9_\x80-\xff]|[)\]])\s*\Z")
_WORD_END = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*)\s*\Z")
# A plain dotted callee (`Dict`, `os.path.join`), not a call's or subscript's result.
_CALLEE = re.compile(rb"(?<![\w.)\]])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\Z")
# `def f(` and `class C(` open parameter and base lists, not calls.
_DEFINITION = re.compile(rb"(?:^|\n)[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+\w+\s*(?:\[[^\n]*\])?\s*\Z")
# Bytes that may open, close or split a call, and newlines (which end an unterminated string
# and may drop the f-string fields it opened): a token without them takes the fast path.
_FRAME_BYTES = re.compile(rb"[()\[\]{},\n]")
_POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")
_TAIL = 512  # bytes of context kept for the callee check


class _Query:
    """A signature query shared by the forks that reached the same `(`; resolved once."""

    def __init__(self, code: str, offset: int, callee: bytes | None = None) -> None:
        self.code = code
        self.offset = offset
        self.callee = callee  # the callee's text, for a call the draft opened
        self.done = False
        self.result: tuple[Signature, ...] | None = None


@dataclass(frozen=True)
class _Frame:
    """An open call: its arguments so far, split at its own top-level commas."""

    depth: int  # bracket depth inside the call's parentheses
    query: _Query
    args: tuple[bytes, ...] | None = ()  # finished arguments; None: not read from the document yet
    cur: bytes = b""  # the argument being written


@dataclass(frozen=True)
class _Step:
    out_len: int
    lex: LexState
    frames: tuple[_Frame, ...] = ()


@dataclass(frozen=True)
class _Verdict:
    """What a frame allows right now."""

    close: str  # "ok", "bare" (only with a new argument before the `)`), or "no"
    keywords: frozenset[str] | None  # parameter names a keyword argument may use; None: any


class _Tables:
    """Per vocabulary: tokens that start a keyword argument's `=`, and closers by lexer state."""

    def __init__(self, index: VocabIndex) -> None:
        self.closing = closing_tables(index)
        self.vocab_size = index.vocab_size
        # Tokens that end a keyword name and write its `=` (`=`, `="`, `=[`, ...), with the
        # identifier part they carry before it.
        self.equals: list[tuple[bytes, int]] = []
        for i in range(index.vocab_size):
            piece = index.token_bytes(i)
            m = re.match(rb"([A-Za-z0-9_]*)\s*=(?!=)", piece)
            if m and not piece.startswith(b"=="):
                self.equals.append((m.group(1), i))
        self._closers: dict[LexState, tuple[list[int], list[int]]] = {}
        self._lock = threading.Lock()

    def closers(self, lex: LexState) -> tuple[list[int], list[int]]:
        """(all, bare): tokens that would close the innermost open bracket from `lex`, and
        those of them with only blanks before the closing bracket."""
        key = lex.truncated(self.closing.reach)
        with self._lock:
            hit = self._closers.get(key)
        if hit is not None:
            return hit
        every: list[int] = []
        bare: list[int] = []
        for piece, ids in self.closing.groups:
            if key.feed(piece).depth < key.depth:
                every += ids
                if piece.lstrip()[:1] == b")":
                    bare += ids
        with self._lock:
            if len(self._closers) > 1024:
                self._closers.clear()
            self._closers[key] = (every, bare)
        return every, bare


def verdict(sigs: tuple[Signature, ...], args: tuple[bytes, ...], cur: bytes) -> _Verdict | None:
    """The constraint on the call's next token, from its signatures and the arguments so far;
    None when nothing can be said (a `*x` / `**x` argument)."""
    done = [a for a in args if a.strip()]
    given = done + ([cur] if cur.strip() else [])
    if any(a.lstrip().startswith(b"*") for a in given):
        return None
    n_pos = sum(1 for a in done if not _KEYWORD_ARG.match(a))
    named = {m.group(1).decode() for a in done if (m := _KEYWORD_ARG.match(a))}
    keywords: set[str] | None = set()
    close = "no"
    for sig in sigs:
        positional = [p for p in sig.params if p.kind in _POSITIONAL]
        taken = {p.name for p in positional[:n_pos]} | named
        if len(positional) < n_pos and not any(p.kind == "VAR_POSITIONAL" for p in sig.params):
            continue  # too many positional arguments already: not this overload
        if keywords is not None:
            if any(p.kind == "VAR_KEYWORD" for p in sig.params):
                keywords = None
            else:
                keywords |= {p.name for p in sig.params
                             if p.kind in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY") and p.name not in taken}
        if close == "ok":
            continue
        m = _KEYWORD_ARG.match(cur)
        # With `cur` counted: a keyword argument, a positional one, or none yet.
        if m:
            after = taken | {m.group(1).decode()}
        elif cur.strip():
            after = taken | {p.name for p in positional[n_pos : n_pos + 1]}
        else:
            after = taken
        missing = [p for p in sig.params if p.required and p.name not in after]
        if not missing:
            close = "ok"
        elif not cur.strip() and [p.name for p in missing] == [p.name for p in positional[n_pos : n_pos + 1]]:
            close = "bare"  # one more positional argument would do
    return _Verdict(close, frozenset(keywords) if keywords is not None else None)


class CallMonitor:
    """Constrains keyword names and the closing bracket of calls (see module doc)."""

    def __init__(self, index: VocabIndex, analysis: Analysis, before: str, after: str,
                 path: str | None, workspace: str | None, deadline: float | None = None,
                 stats: MonitorStats | None = None, lex: LexState | None = None,
                 _init: bool = True) -> None:
        self._index = index
        self._tables = derived(index, _Tables)
        self._analysis = analysis
        self._before = before
        self._before_tail = before[-_TAIL:].encode("utf-8", "surrogatepass")
        self._after = after
        self._path = path
        self._workspace = workspace
        self._deadline = deadline
        self.stats = stats or MonitorStats()
        self._out = bytearray()
        self._steps: list[_Step] = []
        if _init:
            t0 = time.perf_counter()
            lex = lex if lex is not None else initial_state(before)
            frames: tuple[_Frame, ...] = ()
            if lex.in_code and lex.kinds[-1:] == b"(":
                # The cursor sits in a call: jedi says which one, and where it opened.
                query = _Query(before + after, len(before))
                self._analysis.prefetch(query.code, query.offset, path, workspace, kind="signatures")
                frames = (_Frame(lex.depth, query, args=None),)
            self._steps.append(_Step(0, lex, frames))
            self.stats.ms += (time.perf_counter() - t0) * 1000

    def extend_deadline(self, deadline: float) -> None:
        self._deadline = max(self._deadline or 0.0, deadline)

    @property
    def done(self) -> bool:
        return False

    def allowed(self) -> torch.Tensor | None:
        step = self._steps[-1]
        if not step.frames or not step.lex.in_code or step.lex.depth != step.frames[-1].depth:
            return None  # not at a call's own level
        t0 = time.perf_counter()
        try:
            frame = self._ready(step)
            if frame is None or frame.query.result is None:
                return None
            v = verdict(frame.query.result, frame.args, frame.cur)
            if v is None:
                return None
            forbidden: list[int] = []
            if v.close != "ok":
                every, bare = self._tables.closers(step.lex)
                forbidden += every if v.close == "no" else bare
            ident = _LONE_IDENT.match(frame.cur) if frame.cur.strip() else None
            if v.keywords is not None and (ident or not frame.cur.strip()):
                head = ident.group(1) if ident else b""
                forbidden += [i for tail, i in self._tables.equals
                              if (head + tail) and (head + tail).decode("utf-8", "replace") not in v.keywords]
            if not forbidden:
                return None
            return self._index.excluding_mask(forbidden)
        finally:
            self.stats.ms += (time.perf_counter() - t0) * 1000

    def accept(self, token_id: int) -> None:
        t0 = time.perf_counter()
        step = self._steps[-1]
        piece = self._index.token_bytes(token_id)
        if step.frames and step.frames[0].args is None:
            first = self._resolve(step.frames[0])
            step = replace(step, frames=(first,) + step.frames[1:] if first else step.frames[1:])
        lex, frames = step.lex, list(step.frames)
        if _plain(piece, bool(frames)):
            # Nothing that opens, closes or splits a call (most tokens): lex the token at once,
            # and it joins every open call's current argument.
            self._out += piece
            self._steps.append(_Step(len(self._out), lex.feed(piece),
                                     tuple(replace(f, cur=f.cur + piece) for f in frames)))
            self.stats.ms += (time.perf_counter() - t0) * 1000
            return
        for k, byte in enumerate(piece):
            ch = bytes([byte])
            depth, code = lex.depth, lex.in_code
            lex = lex.feed(ch)
            while frames and lex.depth < frames[-1].depth:
                frames.pop()  # the call closed (or a bracket below it did)
            if frames and frames[-1].depth <= depth:
                top = frames[-1]
                if code and byte == ord(",") and depth == top.depth:
                    frames[-1] = replace(top, args=top.args + (top.cur,), cur=b"")
                else:
                    frames[-1] = replace(top, cur=top.cur + ch)
                # Outer calls see the inner call as part of their current argument.
                for j in range(len(frames) - 1):
                    frames[j] = replace(frames[j], cur=frames[j].cur + ch)
            if code and byte == ord("(") and lex.depth == depth + 1 and (head := self._call_head(piece[:k])):
                draft = (bytes(self._out) + piece[: k + 1]).decode("utf-8", "ignore")
                text = self._before + draft
                callee = _CALLEE.search(head)
                query = _Query(text + closing(draft) + self._after, len(text), callee.group(1) if callee else None)
                frames.append(_Frame(lex.depth, query))
                self.stats.triggers += 1
        self._out += piece
        self._steps.append(_Step(len(self._out), lex, tuple(frames)))
        self.stats.ms += (time.perf_counter() - t0) * 1000

    def rollback(self, n: int) -> None:
        roll_back(self._steps, n)
        del self._out[self._steps[-1].out_len :]

    def fork(self) -> CallMonitor:
        other = CallMonitor(self._index, self._analysis, self._before, self._after, self._path,
                            self._workspace, self._deadline, self.stats, _init=False)
        other._out = bytearray(self._out)
        other._steps = list(self._steps)
        return other

    def _call_head(self, head: bytes) -> bytes | None:
        """The text before a `(` that follows `head` (this token's bytes before it), last _TAIL
        bytes, if that `(` opens a call's arguments; else None."""
        tail = (self._before_tail + bytes(self._out) + head)[-_TAIL:]
        if not _CALLEE_END.search(tail) or _DEFINITION.search(tail):
            return None
        word = _WORD_END.search(tail)
        return tail if word is None or not keyword.iskeyword(word.group(1).decode()) else None

    def _ready(self, step: _Step) -> _Frame | None:
        """The innermost frame with its signatures resolved; None when there are none."""
        frame = self._resolve(step.frames[-1])
        if frame is not step.frames[-1]:
            self._steps[-1] = replace(step, frames=step.frames[:-1] + ((frame,) if frame else ()))
        return frame

    def _resolve(self, frame: _Frame) -> _Frame | None:
        """Ask jedi for the frame's signatures (once per query); read a document call's arguments."""
        query = frame.query
        if not query.done:
            query.done = True
            if query.callee is not None and query.callee in self.stats.no_signature:
                # jedi had no signature for this callee earlier in the request (a draft that
                # loops on `Dict(Dict(Dict(`): it would not have one here either.
                self.stats.reused += 1
            else:
                query.result = self._analysis.signatures(query.code, query.offset, self._path,
                                                         self._workspace, self._deadline, self.stats.wait)
                if query.result is None and query.callee is not None:
                    self.stats.no_signature.add(query.callee)
            if query.result is None:
                self.stats.stepped_aside += 1
        if frame.args is not None:
            return frame
        # The call opened before the cursor: its arguments so far come from the document,
        # from the `(` jedi names, which must be the innermost open bracket.
        sigs = query.result
        if not sigs or len({s.bracket for s in sigs}) != 1:
            return None
        split = _split(self._before[sigs[0].bracket + 1 :].encode("utf-8", "surrogatepass"))
        return replace(frame, args=split[0], cur=split[1]) if split else None


def _plain(piece: bytes, in_call: bool) -> bool:
    """Whether a token can neither open a call nor, inside one, close or split it."""
    return not _FRAME_BYTES.search(piece) if in_call else b"(" not in piece


def _split(data: bytes) -> tuple[tuple[bytes, ...], bytes] | None:
    """(finished arguments, current one) of the text right after a call's `(`; None when the
    text leaves another bracket open (the cursor is not at the call's own level)."""
    lex = LexState()
    args: list[bytes] = []
    start = 0
    for k, byte in enumerate(data):
        if byte == ord(",") and lex.in_code and lex.depth == 0:
            args.append(data[start:k])
            start = k + 1
        lex = lex.feed(data[k : k + 1])
    if lex.depth or not lex.in_code:
        return None
    return tuple(args), data[start:]
