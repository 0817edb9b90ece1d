"""The name monitor: after `obj.` and in imports, only names that exist may be generated.

Triggers (checked after every accepted token, on the text so far, in code only):
- dereference: the text ends with `expr.` (an identifier, `)`, `]`, `}` or a string before
  the dot; not a number like `1.`);
- import: `import `, `from pkg import `, or `, ` inside such a list; and `from .` (a
  relative import: a module of the package, one more dot and a module of the parent
  package, or ` import`).

At a trigger, jedi (through `Analysis`) gives the valid names, taking the workspace into
account. Allowed tokens are then those that keep the identifier typed since the trigger on
a path to one of the names, or that finish a name and go on with a break character. Once a
name is finished the monitor is quiet until the next trigger. When jedi cannot decide it
steps aside.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

import torch

from monitors.affinity import preferred
from monitors.analysis import Analysis, WaitBudget, closing
from monitors.base import roll_back
from monitors.syntax import LexState, initial_state
from monitors.vocab import VocabIndex

_IDENT = re.compile(rb"[A-Za-z0-9_\x80-\xff]")
_DEREF = re.compile(rb"(?:[A-Za-z0-9_\x80-\xff]|[)\]}'\"])\.\Z")
_NUMBER = re.compile(rb"(?:^|[^A-Za-z0-9_\x80-\xff.])[0-9][0-9_]*\.\Z")
# `import`, `from pkg import`, or a `,` inside such a list; group 1: trailing blanks.
# (Not a bare `from `: a relative import goes on with dots, which are not names.)
_IMPORT = re.compile(rb"(?:^|\n)[ \t]*(?:import|from[ \t]+[\w.]+[ \t]+import)"
                     rb"(?:[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?[ \t]*,)*([ \t]*)\Z")
# `from .` / `from ..`: a relative import, where a module of the package (or ` import`) follows.
_RELATIVE = re.compile(rb"(?:^|\n)[ \t]*from[ \t]+\.+\Z")
_MID_WORD = re.compile(r"(?:[\w)\]}'\"])\.(\w+)\Z")
_NAME = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*")
_TAIL = 512  # bytes of context kept for trigger checks
# The last byte of every trigger: the dot, the `t` of `import`, a blank or a comma after it.
_TRIGGER_ENDS = frozenset(b". \t,t")


@dataclass
class MonitorStats:
    """Per request, shared by the forks of one monitor: what it did and what it cost."""

    triggers: int = 0
    constrained: int = 0  # tokens chosen under a name constraint
    stepped_aside: int = 0  # triggers where jedi could not decide
    violations: int = 0  # accepted tokens the constraint did not allow (another decoder path)
    # triggers answered with no jedi query: the receiver's names earlier on the line, or a
    # callee that had no signature earlier in the request (calls)
    reused: int = 0
    ms: float = 0.0  # time in this monitor (jedi waits included)
    names: list[str] = field(default_factory=list)  # names completed under a constraint
    wait: WaitBudget = field(default_factory=WaitBudget)  # jedi waits left to this request
    no_signature: set[bytes] = field(default_factory=set)  # callees jedi gave no signatures for (calls)


@dataclass(frozen=True)
class _Step:
    out_len: int
    lex: LexState
    names: frozenset[bytes] | None  # the active constraint, or None
    typed: bytes = b""  # identifier bytes typed since the trigger
    prefer: tuple[tuple[float, frozenset[bytes]], ...] = ()  # (strength, names) by affinity
    unanswered: tuple[str, int] | None = None  # (code, offset) of a dereference jedi did not answer in time


_RECEIVER = re.compile(r"((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*)\.\Z")
_WORD_OR_DOT = re.compile(r"[\w.]")
# Text between two uses of a receiver on one line that may bind a name again, or narrow its
# type for jedi: an assignment (keyword arguments too), a walrus, a loop or comprehension
# variable, `as`, a lambda's parameters, `del`, an isinstance check, or a second statement.
_REBINDS = re.compile(r"(?<![=!<>])=(?!=)|:=|;|\b(?:for|as|lambda|del|import|global|nonlocal|isinstance)\b")


def seen_attributes(code: str, offset: int) -> frozenset[str]:
    """Attributes the document itself uses on the same receiver text (`self.md.Meta` elsewhere).

    Attributes assigned dynamically (setattr, an extension that adds `md.Meta`) are
    invisible to jedi, but code that uses them says they exist.
    """
    m = _RECEIVER.search(code, max(0, offset - 200), offset)
    if m is None:
        return frozenset()
    # The receiver must not go on a longer name or chain (`xself.a`, `a.self.b`). Checked per
    # match rather than by a lookbehind, which keeps re from searching for the literal text
    # first: 7x slower over a 100 KB file.
    use = re.compile(re.escape(m.group(1)) + r"\.([A-Za-z_]\w*)")
    return frozenset(u.group(1) for u in use.finditer(code)
                     if u.start() != m.start() and not (u.start() and _WORD_OR_DOT.match(code, u.start() - 1)))


class NameMonitor:
    """Constrains identifiers after dereferences and in import statements (see module doc)."""

    def __init__(self, index: VocabIndex, analysis: Analysis, before: str, after: str,
                 path: str | None, workspace: str | None, deadline: float | None = None,
                 stats: MonitorStats | None = None, lex: LexState | None = None, heal: str = "",
                 affinity: float = 0.0, _init: bool = True) -> None:
        self._index = index
        self._analysis = analysis
        self._before = before  # the document before the point where generation starts
        self._before_tail = before[-_TAIL:].encode("utf-8", "surrogatepass")  # for the trigger checks, per token
        self._after = after  # the document after the cursor
        self._path = path
        self._workspace = workspace
        self._deadline = deadline
        self.stats = stats or MonitorStats()
        self._heal = heal
        # Healing backed off a trigger's own text (the "." of `obj.`), not part of a name.
        self._heals_trigger = bool(heal) and not _IDENT.match(heal.encode())
        self._affinity = affinity  # logit bonus for names the assignment target points to (0: off)
        self._out = bytearray()
        self._steps: list[_Step] = []
        self._pending = False
        # Receiver text -> (offset of its dot, hash of the text up to it, jedi's names there).
        self._answers: dict[str, tuple[int, int, frozenset[str]]] = {}
        if _init:
            t0 = time.perf_counter()
            self._steps.append(_Step(0, lex if lex is not None else initial_state(before), None))
            # The first query is resolved lazily, so that jedi runs while the model reads the prompt.
            self._pending = self._steps[0].lex.mode == "code"
            if self._pending:
                q = self._query(self._steps[0])
                if q is None and heal:
                    # Healing backs off the last token ("." in `obj.`): the trigger is the document's
                    # text, re-typed by the first tokens. Ask now.
                    probe, start = self._healed_probe(self._steps[0])
                    q = probe._query(start)
                if q is None and not self._heals_trigger and (w := self._mid_word_query()):
                    q = w  # the cursor in a name after a dot (`_resolve` asks this)
                if q is not None:
                    self._analysis.prefetch(q[0], q[1], path, workspace)
            self.stats.ms += (time.perf_counter() - t0) * 1000

    def _resolve(self) -> None:
        if self._pending:
            self._pending = False
            start = self._steps[0]
            step = self._trigger(start)
            if step.names is None and self._heals_trigger:
                step = self._healed_trigger(start)
            elif step.names is None:
                step = self._mid_word(step)
            self._steps[0] = step

    def _healed_trigger(self, start: _Step) -> _Step:
        """Healing backed off the text that ends at a trigger (`.` of `obj.`), and the model
        re-types it, perhaps with a token that also starts the name (`.get`): constrain the
        healed text and the name together, as one path to `heal + name`."""
        probe, healed = self._healed_probe(start)
        step = probe._trigger(healed)
        if step.names is None:
            return start
        heal = self._heal.encode("utf-8")
        prefer = tuple((strength, frozenset(heal + n for n in names)) for strength, names in step.prefer)
        return _Step(start.out_len, start.lex, frozenset(heal + n for n in step.names), b"", prefer)

    def _healed_probe(self, start: _Step) -> tuple[NameMonitor, _Step]:
        """A monitor whose document goes on with the healed text, and its first step there."""
        probe = NameMonitor(self._index, self._analysis, self._before + self._heal, self._after, self._path,
                            self._workspace, self._deadline, self.stats, _init=False)
        return probe, _Step(0, start.lex.feed(self._heal.encode("utf-8")), None)

    def extend_deadline(self, deadline: float) -> None:
        """Let jedi answer until `deadline` (the first draft's, after a slow prefill); before forking."""
        self._deadline = max(self._deadline or 0.0, deadline)

    @property
    def done(self) -> bool:
        return False  # triggers can come at any point of a draft

    @property
    def active(self) -> bool:
        """True while a name constraint applies."""
        return self._steps[-1].names is not None

    def unfinished(self) -> int:
        """How many bytes at the end of the output begin a name that is not finished: a draft
        cut there (time budget, token limit, an unsure next token) would show a name that
        does not exist (`Graph.add_ed`) or a dot waiting for one (`items[2].`), so the decoder
        leaves them out of the suggestion. Also covers a name that a late answer shows missing
        (`_late_cut`)."""
        step = self._steps[-1]
        n = 0
        if step.names is not None and step.typed not in step.names:
            n = min(len(step.typed), len(self._out))
            if n == len(step.typed) and self._out[: len(self._out) - n].endswith(b"."):
                n += 1  # the trigger's dot, when the draft wrote it
        return max(n, self._late_cut())

    def _late_cut(self) -> int:
        """Bytes to drop from the end so that the output stops before the first name that a
        late jedi answer shows to be missing. Where jedi had no answer in time the draft went
        on unconstrained (`self._value` on a cold module); the query went on too, and its
        answer is often in by the time the draft ends."""
        for pos, (code, offset) in ((s.out_len, s.unanswered) for s in self._steps if s.unanswered):
            names = self._analysis.answered(code, offset, self._path, self._workspace)
            if not names:
                continue
            m = _NAME.match(self._out, pos)
            name = m.group().decode("utf-8", "replace") if m else ""
            if name in names | seen_attributes(code, offset) or (not name and pos < len(self._out)):
                continue
            # A missing name, half of one at the end (as `unfinished` drops), or a dot the
            # draft ends with: the draft stops before the dot, when the dot is its own.
            dot = pos - 1 if pos and self._out[pos - 1 : pos] == b"." else pos
            return len(self._out) - dot
        return 0

    def allowed(self) -> torch.Tensor | None:
        self._resolve()
        step = self._steps[-1]
        if step.names is None:
            return None
        t0 = time.perf_counter()
        mask = self._index.name_mask(step.names, step.typed)
        self.stats.ms += (time.perf_counter() - t0) * 1000
        return mask

    def bias(self) -> torch.Tensor | None:
        """Logit bonuses [V] for the next token of each name the assignment target names
        (`enc = self.` -> `encoding`; see monitors.affinity), or None.

        Only the natural next token of the name gets it (the longest token that goes on with
        it, or one that finishes it and breaks), not every token on its path: a bonus on `c`
        of `cache` would spell the name letter by letter where the model prefers `cache`."""
        self._resolve()
        step = self._steps[-1]
        if step.names is None or not step.prefer or self._affinity <= 0:
            return None
        t0 = time.perf_counter()
        out = None
        for strength, names in step.prefer:  # a token on two names' paths gets the stronger bonus
            add = self._index.name_next_mask(names, step.typed) * (strength * self._affinity)  # [V] float
            out = add if out is None else torch.maximum(out, add)
        self.stats.ms += (time.perf_counter() - t0) * 1000
        return out if out is not None and bool(out.any()) else None

    def accept(self, token_id: int) -> None:
        self._resolve()
        t0 = time.perf_counter()
        piece = self._index.token_bytes(token_id)
        step = self._steps[-1]
        self._out += piece
        lex = step.lex.feed(piece)
        nxt = _Step(len(self._out), lex, None)
        if step.names is not None:
            self.stats.constrained += 1
            typed = step.typed + piece
            if self._index.starts_a_name(step.names, typed):
                nxt = _Step(len(self._out), lex, step.names, typed, step.prefer)  # still on the way to a name
            else:
                done = [typed[:k] for k in range(len(typed) + 1)
                        if typed[:k] in step.names and not _IDENT.match(typed, k)]
                if done:
                    name = max(done, key=len).decode("utf-8", "replace")
                    if self._heals_trigger and name.startswith(self._heal):
                        name = name[len(self._heal):]  # a name constrained with the healed `.` before it
                    self.stats.names.append(name)
                else:
                    self.stats.violations += 1
                nxt = self._trigger(nxt, piece)
        else:
            nxt = self._trigger(nxt, piece)
        self._steps.append(nxt)
        self.stats.ms += (time.perf_counter() - t0) * 1000

    def rollback(self, n: int) -> None:
        roll_back(self._steps, n)
        del self._out[self._steps[-1].out_len :]

    def fork(self) -> NameMonitor:
        t0 = time.perf_counter()
        self._resolve()
        self.stats.ms += (time.perf_counter() - t0) * 1000
        other = NameMonitor(self._index, self._analysis, self._before, self._after, self._path,
                            self._workspace, self._deadline, self.stats, heal=self._heal,
                            affinity=self._affinity, _init=False)
        other._out = bytearray(self._out)
        other._steps = list(self._steps)
        other._answers = dict(self._answers)
        return other

    def _mid_word_query(self) -> tuple[str, int, str] | None:
        """(code, offset, typed) of the query for a cursor in a name after a dot (`obj.ap|`).

        The code leaves the typed part out: jedi lists every name at the dot either way, and
        this is then the query of the request at the dot itself, and of each keystroke of the
        name after it, so they find its answer in the cache instead of waiting for jedi again."""
        m = _MID_WORD.search(self._before[-_TAIL:])
        if m is None:
            return None
        dot = len(self._before) - len(m.group(1))
        return self._before[:dot] + self._after, dot, m.group(1)

    def _mid_word(self, step: _Step) -> _Step:
        """At the start, the cursor may sit in a name after a dot (`obj.ap|`, when not healed)."""
        q = self._mid_word_query()
        if q is None:
            return step
        self.stats.triggers += 1
        code, dot, typed_text = q
        names = self._analysis.names(code, dot, self._path, self._workspace, self._deadline, self.stats.wait)
        typed = typed_text.encode("utf-8")
        if not names or not any(n.encode("utf-8").startswith(typed) for n in names):
            self.stats.stepped_aside += 1
            return step
        return _Step(step.out_len, step.lex, frozenset(n.encode("utf-8") for n in names), typed,
                     _prefer(names, self._before[:dot]))

    def _inside_piece(self, step: _Step, piece: bytes) -> _Step:
        """A token that carries the dot and the start of the name (`._`, `.__`): check it after the fact."""
        if step.lex.mode != "code" or b"." not in piece:
            return step
        draft = bytes(self._out).decode("utf-8", "ignore")
        text = self._before + draft
        m = _MID_WORD.search(text[-_TAIL:])
        if m is None or len(m.group(1).encode()) >= len(piece):
            return step  # the dot is not in this token
        self.stats.triggers += 1
        dot = len(text) - len(m.group(1))
        names = self._analysis.names(text + closing(draft) + self._after, dot, self._path, self._workspace,
                                     self._deadline, self.stats.wait)
        typed = m.group(1).encode("utf-8")
        valid = [n.encode("utf-8") for n in (names or ())]
        if not any(n.startswith(typed) for n in valid):
            self.stats.stepped_aside += 1
            return step
        return _Step(step.out_len, step.lex, frozenset(valid), typed, _prefer(names or frozenset(), text[:dot]))

    def _query(self, step: _Step) -> tuple[str, int, str] | None:
        """(code, offset, lead) of the jedi query if the text ends at a trigger in code; `lead`
        is the space the names are generated with."""
        if step.lex.mode != "code":
            return None  # strings and comments are free text
        last = (self._out or self._before_tail)[-1:]
        if not last or last[0] not in _TRIGGER_ENDS:
            return None  # no trigger ends in another byte (most tokens)
        tail = (self._before_tail + bytes(self._out))[-_TAIL:]
        lead = ""
        if _RELATIVE.search(tail):
            pass
        elif _DEREF.search(tail):
            if _NUMBER.search(tail):
                return None
        elif m := _IMPORT.search(tail):
            # Byte-level BPE glues the space to the next word (" os"): right after the keyword
            # or the comma, the names come with their leading space.
            lead = "" if m.group(1) else " "
        else:
            return None
        draft = bytes(self._out).decode("utf-8", "ignore") + lead
        text = self._before + draft
        return text + closing(draft) + self._after, len(text), lead

    def _remember(self, code: str, offset: int, names: frozenset[str]) -> None:
        """Keep jedi's answer after `receiver.` for the same receiver later on the line."""
        m = _RECEIVER.search(code, max(0, offset - _TAIL), offset)
        if m is not None:
            self._answers[m.group(1)] = (offset, hash(code[:offset]), names)

    def _same_line(self, code: str, offset: int) -> frozenset[str] | None:
        """The names jedi gave for this receiver earlier on this line of the draft
        (`T.Keyword, T.Name, T.`), when nothing in between can have rebound it; else None."""
        m = _RECEIVER.search(code, max(0, offset - _TAIL), offset)
        found = self._answers.get(m.group(1)) if m is not None else None
        if found is None:
            return None
        earlier, digest, names = found
        between = code[earlier:m.start()]
        if earlier >= offset or "\n" in between or _REBINDS.search(between) or hash(code[:earlier]) != digest:
            return None
        self.stats.reused += 1
        return names

    def _trigger(self, step: _Step, piece: bytes = b"") -> _Step:
        """The step with a name constraint if the text now ends at a trigger in code."""
        q = self._query(step)
        if q is None:
            return self._inside_piece(step, piece) if piece else step
        self.stats.triggers += 1
        code, offset, lead = q
        names = None if lead else self._same_line(code, offset)
        if names is None:
            names = self._analysis.names(code, offset, self._path, self._workspace, self._deadline, self.stats.wait)
            if names and not lead:
                self._remember(code, offset, names)
        if _RELATIVE.search(code[max(0, offset - 64) : offset].encode("utf-8", "surrogatepass")):
            parent = self._analysis.names(code[:offset] + "." + code[offset:], offset + 1, self._path,
                                          self._workspace, self._deadline, self.stats.wait)
            if names or parent:
                names = (names or frozenset()) | {"." + n for n in parent or ()} | {" import"}
                return _Step(step.out_len, step.lex, frozenset(n.encode("utf-8") for n in names), b"")
        if not names:
            self.stats.stepped_aside += 1
            # No answer in time: the draft goes on, and `_late_cut` looks again when it ends.
            return replace(step, unanswered=(code, offset)) if names is None and not lead else step
        prefer: tuple[tuple[float, frozenset[bytes]], ...] = ()
        if not lead:
            names = names | seen_attributes(code, offset)
            prefer = _prefer(names, code[:offset])
        return _Step(step.out_len, step.lex, frozenset((lead + n).encode("utf-8") for n in names), b"", prefer)


def _prefer(names: frozenset[str], before: str) -> tuple[tuple[float, frozenset[bytes]], ...]:
    """The names related to the assignment target that `before` ends in, by strength, as bytes."""
    return tuple((strength, frozenset(n.encode("utf-8") for n in group))
                 for strength, group in sorted(preferred(names, before).items()))
