"""Garbage collection between completions, not in the middle of one.

CPython collects its oldest generation in full once it has grown by a quarter since the last
full collection, and a full collection looks at every container object in the process. jedi's
parse trees and inference caches make that over a million objects after a few dozen
completions: each full collection then stops every thread for 0.4 to 1.2 s, wherever the
allocation count happens to fall: in the prefill, in the decoding, or in a jedi query that a
draft waits for (BENCHMARKS.md: 11 of them in 100 dev-set completions, 4.4 s in all).

While the policy is installed (`installed()`, the server and batch mode):

- automatic full collections are off; the young generations are collected as before;
- `after_request()` freezes what is alive after each completion (`gc.freeze`), so the young
  collections of the next completion never look at it again. It counts only what was not
  frozen yet: `gc.get_freeze_count` walks the whole frozen heap, 10 ms or more a million
  objects, which at every keystroke of a typing burst made the requests slower (measured);
- `idle()` freezes likewise and, once the frozen heap has grown by a quarter since the last
  full collection (CPython's own rule), collects it in full. The caller runs it when nothing
  waits: the server after a pause in requests, batch mode between cases;
- should the heap double with no idle moment (a completion every few hundred ms for
  minutes), `after_request()` collects at once, so memory stays bounded.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

GROWTH = 0.25  # a full collection is due once the frozen heap grew by this share (idle only)
LIMIT = 1.0  # ... and happens after the next completion once it grew by this share
_NEVER = 1 << 30  # a threshold the oldest generation's counter does not reach


@dataclass
class CollectorStats:
    """What the policy did: full collections and their time, and the objects frozen now."""

    full: int = 0
    ms: float = 0.0
    frozen: int = 0


_lock = threading.Lock()
_depth = 0  # nesting of `installed()`
_saved: tuple[int, int, int] | None = None  # gc thresholds to restore
_base = 0  # objects kept by the last full collection
_pending = 0  # objects frozen since then (`gc.get_freeze_count` walks them all: 10 ms a million)
stats = CollectorStats()


def install() -> None:
    """Switch automatic full collections off and start from a collected, frozen heap."""
    global _depth, _saved
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        _saved = gc.get_threshold()
        gc.set_threshold(_saved[0], _saved[1], _NEVER)
        _full()


def uninstall() -> None:
    """Undo `install` (the last of nested ones): thresholds back, nothing frozen."""
    global _depth
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        if _depth == 0 and _saved is not None:
            gc.unfreeze()
            gc.set_threshold(*_saved)


@contextmanager
def installed() -> Iterator[None]:
    """The policy for the duration of a block (batch mode)."""
    install()
    try:
        yield
    finally:
        uninstall()


def active() -> bool:
    return _depth > 0


def after_request() -> None:
    """After a completion: freeze what is alive; collect now only if the heap has doubled."""
    with _lock:
        if not _depth:
            return
        _freeze()
        if _pending > LIMIT * _base:
            _full()


def idle() -> float:
    """When nothing waits: freeze, and collect in full if due. Milliseconds spent collecting."""
    with _lock:
        if not _depth:
            return 0.0
        _freeze()
        return _full() if _pending > GROWTH * _base else 0.0


def _freeze() -> None:
    """Freeze the objects not frozen yet, counting them (what survived since the last freeze)."""
    global _pending
    _pending += len(gc.get_objects())  # generations 0-2 only: the unfrozen ones
    gc.freeze()
    stats.frozen = _base + _pending


def _full() -> float:
    """Collect everything, then freeze the survivors; under `_lock`."""
    global _base, _pending
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    _base, _pending = len(gc.get_objects()), 0
    gc.freeze()
    ms = (time.perf_counter() - t0) * 1000
    stats.frozen = _base
    stats.full += 1
    stats.ms += ms
    log.debug("full garbage collection: %.0f ms, %d objects kept", ms, _base)
    return ms
