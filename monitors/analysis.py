"""jedi, once per workspace: the names valid at a point of the code, and the signatures of the
call the point sits in, with a timeout and a cache.

Monitors ask only at triggers (after `obj.`, after `import `, after `f(`), never per token. jedi is not
thread-safe and its first query in a file can take a second, so every query runs on one
dedicated thread and the caller waits at most `timeout` seconds: a query that is late,
raises or finds nothing makes the monitor step aside (the draft goes on unconstrained).
The queries of a workspace share one jedi inference state for a while (see `_share_state`):
a save (`invalidate`) or age renews it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitors.vocab import cache_base

log = logging.getLogger(__name__)

Result = Any  # frozenset[str] for names, tuple[Signature, ...] for signatures
Key = tuple[str, int, int, int, str, str]  # (kind, hash of the code, its length, offset, path, workspace)

DEFAULT_TIMEOUT_S = 2.5
CACHE_SIZE = 512  # answers kept (names or signatures; keyed by a hash of the code and the point)
HUNG_S = 30.0  # a query running longer than this has hung jedi: later ones get a fresh thread
MAX_INFLIGHT = 32  # queries queued or running at once; past it, monitors step aside
PROJECTS = 8  # jedi projects kept, one per workspace (or folder of a file outside any)
STATE_CHECK_S = 1.0  # how often a shared state looks whether the modules it read changed on disk
STATE_TTL_S = 600.0  # ... and it is rebuilt after this in any case (a new file may answer a failed import)
STATE_QUERIES = 512  # ... or after this many queries: its caches grow (about 0.16 MB a query)
LISTINGS = 8  # names queries after a dot whose jedi completions are kept, for `obj.name(` after them
_CALLED_MEMBER = re.compile(r"\.([^\W\d]\w*)\($")
PROXIES = 256  # (file, receiver) pairs remembered as proxies (`__getattr__`), all files together
# A plain dotted name before the dot (`T.Comment.`), not the tail of a call or subscript (`f().x.`).
_RECEIVER_CHAIN = re.compile(r"(?<![\w.)\]])([^\W\d]\w*(?:\.[^\W\d]\w*)*)\.$")


@dataclass
class AnalysisStats:
    """What the monitors' static analysis did (summed over requests)."""

    queries: int = 0
    cache_hits: int = 0
    timeouts: int = 0
    errors: int = 0
    empty: int = 0  # jedi found nothing: the monitor stepped aside
    hung: int = 0  # times a stuck jedi thread was left behind for a fresh one
    busy: int = 0  # queries refused because MAX_INFLIGHT were waiting
    dynamic: int = 0  # the object has __getattr__: any name may be valid, so no constraint
    proxies: int = 0  # queries not asked: their receiver (or its start) was such an object in this file
    invalidated: int = 0  # times saved files made the answers and inferences be forgotten
    warmed: int = 0  # documents read ahead of their first query (an editor opened them)
    members: int = 0  # signatures of `obj.name(` read off the names query at `obj.`, with no new Script
    query_ms: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {"queries": self.queries, "cache_hits": self.cache_hits, "timeouts": self.timeouts,
                "errors": self.errors, "empty": self.empty, "dynamic": self.dynamic, "proxies": self.proxies,
                "hung": self.hung, "busy": self.busy,
                "invalidated": self.invalidated, "warmed": self.warmed, "members": self.members,
                "query_ms": round(self.query_ms, 1)}


@dataclass
class WaitBudget:
    """Per request: how long its monitors may still wait for jedi, all queries together.

    A query that times out uses it all up: jedi is busy (a cold, huge module), and every
    further wait would come out of the draft's own time. Later queries then take only
    answers that are ready.
    """

    left_s: float = float("inf")


@dataclass(frozen=True)
class Param:
    """One parameter of a signature: `kind` is inspect's name for it (POSITIONAL_ONLY, ...)."""

    name: str
    kind: str
    required: bool  # no default value (and not *args / **kwargs)


@dataclass(frozen=True)
class Signature:
    """A callable's parameters, and where its call's `(` sits in the queried code."""

    params: tuple[Param, ...]
    bracket: int  # offset of the call's opening bracket


class Analysis:
    """Answers "which names may follow here" with jedi; thread-safe, shared by all requests."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S, environment: str = "interpreter",
                 dynamic_params: bool = False):
        self.timeout = timeout
        # jedi's dynamic parameter search infers an unannotated parameter from the calls of its
        # function found in the workspace: a fifth of jedi's time (profile, dev set). Queries
        # started ahead (`prefetch`: the cursor's own, while the model reads the prompt) use it;
        # the ones a draft waits for do not, unless `dynamic_params`. Without it such a
        # parameter is unknown there and the monitor steps aside (BENCHMARKS.md).
        self.dynamic_params = dynamic_params
        self.stats = AnalysisStats()
        self._environment_kind = environment
        self._environment = None
        self._projects: dict[str, object] = {}
        self._cache: OrderedDict[Key, Result | None] = OrderedDict()
        self._distinct: dict[Result, Result] = {}  # one copy of each distinct answer in the cache
        self._inflight: dict[Key, Future[Result | None]] = {}
        # jedi's completions by name, of the last names queries after a dot (`_member_signatures`)
        self._listings: OrderedDict[Key, dict[str, Any]] = OrderedDict()
        # (path, receiver text) of objects with `__getattr__`: see `_known_proxy`
        self._proxies: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        # One thread: jedi and parso keep global caches that are not safe to share.
        self._jedi = ThreadPoolExecutor(max_workers=1, thread_name_prefix="draftls-jedi")
        self._running_since: float | None = None  # when the jedi thread's current query started
        self._states = _States()  # per jedi thread: a hung thread left behind keeps its own
        self._epoch = 0  # bumped by `invalidate`: older shared states are dropped

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    @property
    def project_count(self) -> int:
        return len(self._projects)

    @staticmethod
    def _key(kind: str, code: str, offset: int, path: str | None, workspace: str | None) -> Key:
        # Python's own string hash (SipHash, 64 bits, keyed per process) is enough for an
        # in-memory cache. hashlib would release the GIL on a document this size and then
        # wait for the jedi thread to hand it back: 0.4 ms a key in a dev-set run, not 0.06.
        return kind, hash(code), len(code), offset, path or "", workspace or ""

    def prefetch(self, code: str, offset: int, path: str | None, workspace: str | None,
                 kind: str = "names") -> None:
        """Start the query now (e.g. while the model reads the prompt); `names` picks it up. Nobody
        waits for it yet, so jedi may search harder (dynamic parameters)."""
        if kind == "names" and self._known_proxy(code, offset, path):
            return
        self._submit(self._key(kind, code, offset, path, workspace), code, offset, path, workspace, dynamic=True)

    def _submit(self, key: Key, code: str, offset: int, path: str | None,
                workspace: str | None, dynamic: bool = False) -> Future[Result | None] | None:
        with self._lock:
            if key in self._cache:
                return None
            job = self._inflight.get(key)
            if job is not None:
                return job
            since = self._running_since
            if since is not None and time.monotonic() - since > HUNG_S:
                # Python cannot stop the stuck thread; leave it, and its queue, behind.
                log.warning("jedi has been stuck on one query for %.0f s; starting a fresh jedi thread",
                            time.monotonic() - since)
                self.stats.hung += 1
                self._jedi.shutdown(wait=False, cancel_futures=True)
                self._jedi = ThreadPoolExecutor(max_workers=1, thread_name_prefix="draftls-jedi")
                self._inflight.clear()
                self._running_since = None
            if len(self._inflight) >= MAX_INFLIGHT:
                self.stats.busy += 1
                fut: Future[Result | None] = Future()
                fut.set_exception(RuntimeError(f"{MAX_INFLIGHT} jedi queries already waiting"))
                return fut
            self.stats.queries += 1
            run = self._complete if key[0] == "names" else self._signatures
            job = self._inflight[key] = self._jedi.submit(self._timed, run, code, offset, path, workspace,
                                                          dynamic or self.dynamic_params)
            epoch = self._epoch
        # Outside the lock: a job that is already done runs the callback right here.
        job.add_done_callback(lambda j: self._finish(key, j, epoch))
        return job

    def _timed(self, run: Any, *args: Any) -> Result | None:
        self._running_since = time.monotonic()
        try:
            return run(*args)
        except Exception:
            self._drop_states()
            raise
        finally:
            self._running_since = None

    def _drop_states(self) -> None:
        """On the jedi thread, after jedi raised: its memo caches may hold the placeholders
        it stores while a value is being inferred, which would answer later queries."""
        self._states.by_root.clear()
        with self._lock:
            self._listings.clear()

    def _finish(self, key: Key, job: Future[Result | None], epoch: int) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            if epoch != self._epoch:  # asked before files changed: the answer may be out of date
                return
        if job.exception() is None:
            self._store(key, job.result())

    def names(self, code: str, offset: int, path: str | None, workspace: str | None,
              deadline: float | None = None, wait: WaitBudget | None = None) -> frozenset[str] | None:
        """Completion names jedi gives at `offset` of `code`; None when it cannot decide."""
        return self._ask("names", code, offset, path, workspace, deadline, wait)

    def answered(self, code: str, offset: int, path: str | None, workspace: str | None) -> frozenset[str] | None:
        """The names at `offset` if a query has already answered them; never asks or waits."""
        with self._lock:
            return self._cache.get(self._key("names", code, offset, path, workspace))

    def signatures(self, code: str, offset: int, path: str | None, workspace: str | None,
                   deadline: float | None = None, wait: WaitBudget | None = None) -> tuple[Signature, ...] | None:
        """Signatures of the call whose arguments `offset` sits in; None when jedi cannot tell."""
        return self._ask("signatures", code, offset, path, workspace, deadline, wait)

    def _ask(self, kind: str, code: str, offset: int, path: str | None, workspace: str | None,
             deadline: float | None, wait: WaitBudget | None) -> Result | None:
        key = self._key(kind, code, offset, path, workspace)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                self.stats.cache_hits += 1
                return self._cache[key]
        if kind == "names" and self._known_proxy(code, offset, path):
            self.stats.proxies += 1
            return None
        timeout = self.timeout
        if deadline is not None:  # never more than half of what is left: the draft itself needs time
            timeout = max(0.05, min(timeout, (deadline - time.perf_counter()) / 2))
        if wait is not None:
            timeout = max(0.0, min(timeout, wait.left_s))
        t0 = time.perf_counter()
        job = self._submit(key, code, offset, path, workspace)
        try:
            if job is None:  # finished between the two looks
                return self._cache.get(key)
            # A late query goes on in its thread and fills the cache for the next request.
            return job.result(timeout=timeout)
        except FutureTimeout:
            self.stats.timeouts += 1
            log.info("jedi gave no answer in %.2f s at offset %d of %s; the monitor steps aside", timeout, offset, path)
            if wait is not None:
                wait.left_s = 0.0
            return None
        except Exception as e:  # jedi and parso raise on odd code (e.g. jedi#1888): step aside
            self.stats.errors += 1
            log.info("jedi failed at offset %d of %s: %r", offset, path, e)
            return None
        finally:
            spent = time.perf_counter() - t0
            self.stats.query_ms += spent * 1000
            if wait is not None:
                wait.left_s = max(0.0, wait.left_s - spent)

    def _store(self, key: Key, result: Result | None) -> None:
        with self._lock:
            # Every keystroke is a new key, but mostly the same answer (the attributes of one
            # object): keep one copy of each distinct answer, not one per key.
            if result is not None:
                result = self._distinct.setdefault(result, result)
            self._cache[key] = result
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            if len(self._distinct) > CACHE_SIZE:  # forget the answers no key holds any more
                self._distinct = {v: v for v in self._cache.values() if v is not None}

    def invalidate(self) -> None:
        """Files on disk changed (a save): forget the answers and jedi's inferences about them."""
        with self._lock:
            self._epoch += 1
            self.stats.invalidated += 1
            self._cache.clear()
            self._distinct.clear()
            self._listings.clear()
            self._proxies.clear()

    def _script(self, code: str, offset: int, path: str | None, workspace: str | None,
                dynamic: bool) -> tuple[object, int, int]:
        """A jedi Script of `code`, and `offset` as jedi's (1-based line, column); `dynamic`: may
        it infer parameters from their calls (see `__init__`)."""
        import jedi

        line = code.count("\n", 0, offset) + 1
        column = offset - (code.rfind("\n", 0, offset) + 1)
        root, project = self._project(workspace, path)
        script = jedi.Script(code=code, path=path, project=project, environment=self._env())
        self._share_state(script, root)
        _fresh_query(script._inference_state, dynamic)
        return script, line, column

    def _share_state(self, script: Any, root: str) -> None:
        """Let `script` infer with the state that the workspace's earlier queries built.

        jedi gives every Script a fresh inference state, so each query infers the receiver's
        class, its bases and the modules they come from all over again: most of a query's
        time. The other modules' files do not change between keystrokes, so a state is kept
        per workspace until a module it read changes on disk, or `invalidate`, or STATE_TTL_S.
        Not on a short timer: a new state makes the next query infer the package anew (a
        second for networkx), which a request then waits for. The document itself is parsed
        anew by each Script, and its module replaces the older one in the state's module
        cache; only another module that imports the document, inferred in an earlier query,
        keeps the version it saw then until the state is renewed.
        """
        state = self._states.by_root.get(root)
        if state is None or state.stale(self._epoch):
            state = self._states.by_root[root] = _State(script._inference_state, self._epoch)
            while len(self._states.by_root) > PROJECTS:
                self._states.by_root.pop(next(iter(self._states.by_root)))
        else:
            script._inference_state = state.inference  # `_script` starts its counts over (`_fresh_query`)
        state.queries += 1

    def _complete(self, code: str, offset: int, path: str | None, workspace: str | None,
                  dynamic: bool) -> frozenset[str] | None:
        """Runs on the jedi thread."""
        listing = self._script_listing(code, offset, path, workspace, dynamic)
        names = frozenset(listing)
        if not names:
            self.stats.empty += 1
            return None
        if "__getattr__" in names:
            if "__file__" in names or "__spec__" in names:
                # A module's __getattr__ (PEP 562) serves lazy imports and deprecations; its
                # names are still the ones jedi sees.
                names = names - {"__getattr__"}
            else:
                self.stats.dynamic += 1  # a proxy object: any name may be valid
                self._remember_proxy(code, offset, path)
                return None
        if code[offset - 1 : offset] == ".":
            with self._lock:
                self._listings[self._key("names", code, offset, path, workspace)] = listing
                while len(self._listings) > LISTINGS:
                    self._listings.popitem(last=False)
        return names

    def _script_listing(self, code: str, offset: int, path: str | None, workspace: str | None,
                        dynamic: bool) -> dict[str, Any]:
        """jedi's completions at `offset`, by name, from a new Script of `code`."""
        script, line, column = self._script(code, offset, path, workspace, dynamic)
        completions = script.complete(line, column)
        if not completions:
            # The bracket trick (monitors4codegen): unclosed brackets before the cursor can
            # make jedi give up; close them right after the cursor and ask again.
            closers = closing(code[max(0, offset - 4000) : offset])
            if closers:
                script, _, _ = self._script(code[:offset] + closers + "\n" + code[offset:], offset, path, workspace,
                                            dynamic)
                completions = script.complete(line, column)
        names: dict[str, Any] = {}
        for c in completions:
            if c.name:
                names.setdefault(c.name, c)
        return names

    def _signatures(self, code: str, offset: int, path: str | None, workspace: str | None,
                    dynamic: bool) -> tuple[Signature, ...] | None:
        """Runs on the jedi thread."""
        found = self._member_signatures(code, offset, path, workspace, dynamic)
        if found:
            self.stats.members += 1
            return tuple(found)
        script, line, column = self._script(code, offset, path, workspace, dynamic)
        for sig in script.get_signatures(line, column):
            row, col = sig.bracket_start
            bracket = _offset(code, row, col)
            if bracket is not None and code[bracket : bracket + 1] == "(" and (converted := _signature(sig, bracket)):
                found.append(converted)
        if not found:
            self.stats.empty += 1
            return None
        return tuple(found)

    def _known_proxy(self, code: str, offset: int, path: str | None) -> bool:
        """Whether the receiver, or its start (`Name` of `Name.Builtin.`), is one that jedi found to
        have `__getattr__` in this file before: an attribute of it may be anything, so the
        query is not asked.

        Pygments' token types are such objects (`Name.`, `T.Comment.`): jedi took 45 to 65 ms to
        say so each time, 0.6 s of a three-draft dev run. The same text may name another object
        elsewhere in the file; then the monitor steps aside where jedi might have answered, which
        never masks a valid name. Receivers that start with `self` or `cls` are not remembered:
        they differ by class."""
        if not self._proxies:
            return False
        m = _RECEIVER_CHAIN.search(code, max(0, offset - 256), offset)
        if m is None:
            return False
        parts = m.group(1).split(".")
        with self._lock:
            return any((path or "", ".".join(parts[:n])) in self._proxies for n in range(1, len(parts) + 1))

    def _remember_proxy(self, code: str, offset: int, path: str | None) -> None:
        m = _RECEIVER_CHAIN.search(code, max(0, offset - 256), offset)
        if m is not None and m.group(1).split(".")[0] not in _SCOPED:
            with self._lock:
                self._proxies[(path or "", m.group(1))] = None
                while len(self._proxies) > PROXIES:
                    self._proxies.popitem(last=False)

    def _member_signatures(self, code: str, offset: int, path: str | None, workspace: str | None,
                           dynamic: bool) -> list[Signature]:
        """Signatures of a call `obj.name(` that ends at `offset`, from jedi's completion of `name`
        in an earlier names query at `obj.`; [] when there was none, or it gives no signatures (a
        property: then a Script asks).

        A draft's `obj.name(` mostly follows a query at `obj.` (the cursor's, or the draft's own
        dot): that query's code is this one without `name(` and the `)` that closes it. A new
        Script would parse the document again and infer `obj` again: 15 ms a query on the dev
        set, against 1 ms for the completion's own signatures, which were the same in 158 of 160
        calls there; the two others were properties (BENCHMARKS.md)."""
        m = _CALLED_MEMBER.search(code, max(0, offset - 256), offset)
        if m is None:
            return []
        start = m.start(1)
        keys = [self._key("names", code[:start] + code[offset + skip :], start, path, workspace)
                for skip in ((1, 0) if code[offset : offset + 1] == ")" else (0,))]
        with self._lock:
            names = next((found for key in keys if (found := self._listings.get(key)) is not None), None)
        completion = names.get(m.group(1)) if names is not None else None
        if completion is None:
            return []
        try:
            _fresh_query(completion._inference_state, dynamic)
            return [s for sig in completion.get_signatures() if (s := _signature(sig, offset - 1))]
        except Exception as e:  # e.g. a module of that query gone from parso's cache since: ask a Script
            log.debug("signatures from an earlier completion failed: %r", e)
            self._drop_states()  # it may have broken off inside an inference, as `_timed` says
            return []

    def _env(self) -> object:
        import jedi

        if self._environment is None:
            # parso caches parsed modules (pickles) in jedi's cache folder: keep it in ours, so
            # that the server writes nowhere else and never reads another program's pickles.
            if (base := cache_base()) is not None:
                jedi.settings.cache_directory = str(base / "jedi")
            # In-process: no subprocess per workspace; the server's own sys.path (its venv) is searched.
            self._environment = jedi.InterpreterEnvironment()
        return self._environment

    def _project(self, workspace: str | None, path: str | None) -> tuple[str, object]:
        """The jedi project of a workspace (or of the file's folder), and its root."""
        import jedi

        root = workspace or (str(Path(path).parent) if path else ".")
        project = self._projects.pop(root, None) or jedi.Project(root)
        self._projects[root] = project  # the newest last; at most PROJECTS are kept
        while len(self._projects) > PROJECTS:
            self._projects.pop(next(iter(self._projects)))
        return root, project

    def warm(self, code: str, path: str | None, workspace: str | None) -> Future[None]:
        """Parse a document and infer its imports in the background (the first query is the slow one)."""
        def run() -> None:
            try:
                script, _, _ = self._script(code, 0, path, workspace, dynamic=True)  # reading ahead: nobody waits
                # Inferring the imports is what the first real query would spend its time on.
                for name in script.get_names():
                    if name.type == "module" or name.description.startswith(("import ", "from ")):
                        name.infer()
                self.stats.warmed += 1
            except Exception as e:
                self._drop_states()
                log.info("jedi warm-up failed for %s: %r", path, e)
        return self._jedi.submit(run)


def _fresh_query(state: Any, dynamic: bool) -> None:
    """Set a (shared) inference state up for one more query; `dynamic`: see `Analysis.__init__`."""
    state.do_dynamic_params_search = dynamic
    # jedi's cap on inferences of one node counts per Script: a shared state starts each query at 0.
    state.inferred_element_counts = {}


@dataclass
class _State:
    """A jedi inference state shared by the queries of one workspace."""

    inference: Any
    epoch: int  # Analysis._epoch when it was made
    queries: int = 0
    born: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)  # born, as file times count
    checked: float = field(default_factory=time.monotonic)  # the last look at the files

    def stale(self, epoch: int) -> bool:
        """Whether to make a new state: files were saved since (`epoch`), it is old or has
        answered many queries, or a module it read changed on disk."""
        return (self.epoch != epoch or self.queries >= STATE_QUERIES
                or time.monotonic() - self.born > STATE_TTL_S or self._changed_on_disk())

    def _changed_on_disk(self) -> bool:
        """Whether a module file this state has read was written after the state was made
        (at most one look per STATE_CHECK_S: a stat per module, about 1 ms for 120)."""
        now = time.monotonic()
        if now - self.checked < STATE_CHECK_S:
            return False
        self.checked = now
        modules = getattr(getattr(self.inference, "module_cache", None), "_name_cache", None)
        if modules is None:  # another jedi: fall back to a timer
            return now - self.born > 30.0
        wall = time.time()
        for values in list(modules.values()):
            for value in values:
                path = getattr(getattr(value, "file_io", None), "path", None)
                if path is None:
                    continue
                try:
                    mtime = os.stat(path).st_mtime
                except OSError:  # an unsaved document, or a module gone: nothing to re-read
                    continue
                # A file dated in the future cannot be judged; it would renew every look.
                if self.wall < mtime <= wall:
                    return True
        return False


class _States(threading.local):
    """Shared inference states by workspace root, one set per jedi thread (jedi is not thread-safe)."""

    def __init__(self) -> None:
        self.by_root: dict[str, _State] = {}


def closing(text: str) -> str:
    """Closing brackets for the brackets left open in `text` (strings and comments skipped,
    roughly; a bracket that `text` closes without opening starts the count over).

    Monitors put them after the point of a query in the middle of a draft, for the brackets
    the draft opened: otherwise the rest of the file sits inside them, parso's diff parser
    parses it all again, and jedi reads the code that follows as arguments. With them the
    monitors waited half as long for signatures on a held-out sample, with the same drafts
    (BENCHMARKS.md).
    """
    stack: list[str] = []
    pairs = {"(": ")", "[": "]", "{": "}"}
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
            elif ch == "\n" and len(quote) == 1:
                quote = ""
        elif ch == "#":
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl
        elif ch in "'\"":
            quote = text[i : i + 3] if text[i : i + 3] in ("'''", '"""') else ch
            i += len(quote) - 1
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")]}":
            if stack and stack[-1] == ch:
                stack.pop()
            else:
                stack.clear()  # unbalanced before here: start over
        i += 1
    return "".join(reversed(stack))


_VARIADIC = ("VAR_POSITIONAL", "VAR_KEYWORD")
_SCOPED = frozenset({"self", "cls"})  # receivers that name another object in each class


def _offset(code: str, row: int, col: int) -> int | None:
    """The offset of jedi's (1-based row, 0-based column in code points) in `code`."""
    start = 0
    for _ in range(row - 1):
        start = code.find("\n", start) + 1
        if start == 0:
            return None
    return start + col


def _signature(sig: Any, bracket: int) -> Signature | None:
    """Our form of a jedi signature; None where jedi fell back to object(): the real __init__ is
    generated (attrs, pydantic, a metaclass) and unknown, so nothing may be said about the arguments."""
    if sig.type == "class" and not sig.params:
        return None
    return Signature(tuple(Param(p.name, p.kind.name, p.kind.name not in _VARIADIC and not _has_default(p.description))
                           for p in sig.params), bracket)


def _has_default(description: str) -> bool:
    """True for jedi's `param name: annotation=default`: an `=` outside brackets and strings."""
    depth, quote = 0, ""
    for ch in description:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "=" and depth == 0:
            return True
    return False
