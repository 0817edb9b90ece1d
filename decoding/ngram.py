"""N-gram tables over a model's token ids: what usually follows the last few tokens.

Used to draft tokens for self-speculation at no model cost (the full model verifies
them, so a wrong guess costs only its place in the verify pass), and as the n-gram
model of superposed decoding. A table of order n keeps, for every context of n-1 tokens,
each next token with its count, in sorted numpy arrays: a lookup is a binary search.

The shippable corpus table is built from the Python standard library only (never its
tests, never the dev set), once per tokenizer, and cached on disk.
"""

from __future__ import annotations

import hashlib
import logging
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the table's layout or source set changes
ORDERS = (2, 3, 4)  # contexts of 1 to 3 tokens; keys are exact in int64 for vocabularies < 2^21


@dataclass
class Order:
    """One order's entries, sorted by context, then by count (descending)."""

    ctx: np.ndarray  # [N] int64 context keys
    nxt: np.ndarray  # [N] int32 next token
    cnt: np.ndarray  # [N] int32 count


class NgramTable:
    """Counts of (context, next token) for the orders in ORDERS over one vocabulary."""

    def __init__(self, vocab_size: int, orders: dict[int, Order]):
        if vocab_size >= 1 << 21:
            raise ValueError("vocabulary too large for exact int64 n-gram keys")
        self.vocab_size = vocab_size
        self.orders = orders

    @classmethod
    def build(cls, ids: np.ndarray, vocab_size: int) -> NgramTable:
        """Count every n-gram of `ids` [T] (documents separated by -1, which no n-gram spans)."""
        ids = np.asarray(ids, dtype=np.int64)
        orders = {}
        for n in ORDERS:
            if len(ids) < n:
                orders[n] = Order(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))
                continue
            span = len(ids) - n + 1
            ctx = np.zeros(span, dtype=np.int64)
            ok = np.ones(span, dtype=bool)
            for i in range(n):
                col = ids[i : i + span]
                ok &= col >= 0
                if i < n - 1:
                    ctx = ctx * vocab_size + np.maximum(col, 0)
            pair = ctx[ok] * vocab_size + ids[n - 1 :][ok]  # < V^4 < 2^63
            keys, counts = np.unique(pair, return_counts=True)
            c, x = keys // vocab_size, keys % vocab_size
            order = np.lexsort((-counts, c))  # by context, most frequent next first
            orders[n] = Order(c[order], x[order].astype(np.int32), counts[order].astype(np.int32))
        return cls(vocab_size, orders)

    def key(self, context: Sequence[int]) -> int:
        k = 0
        for t in context:
            k = k * self.vocab_size + int(t)
        return k

    def _run(self, n: int, context: Sequence[int]) -> tuple[int, int]:
        """The [start, stop) entries of order n for the last n-1 tokens of context."""
        o, k = self.orders[n], self.key(context[len(context) - (n - 1) :])
        lo = int(np.searchsorted(o.ctx, k, "left"))
        if lo >= len(o.ctx) or o.ctx[lo] != k:
            return lo, lo
        return lo, int(np.searchsorted(o.ctx, k, "right"))

    def predict(self, context: Sequence[int], min_count: int = 2) -> tuple[int, float] | None:
        """The most frequent next token after the longest known context, and its share there."""
        for n in sorted(self.orders, reverse=True):
            if len(context) < n - 1:
                continue
            lo, hi = self._run(n, context)
            if hi > lo and self.orders[n].cnt[lo] >= min_count:
                cnt = self.orders[n].cnt
                return int(self.orders[n].nxt[lo]), float(cnt[lo]) / float(cnt[lo:hi].sum())
        return None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{f}{n}": getattr(o, f) for n, o in self.orders.items() for f in ("ctx", "nxt", "cnt")}
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, vocab_size=np.int64(self.vocab_size), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> NgramTable:
        with np.load(path, allow_pickle=False) as z:  # plain arrays only, never pickles
            orders = {n: Order(z[f"ctx{n}"], z[f"nxt{n}"], z[f"cnt{n}"]) for n in ORDERS}
            return cls(int(z["vocab_size"]), orders)


def stdlib_sources() -> list[Path]:
    """The standard library's own Python files: no tests, no installed packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))


def stdlib_table(encode_batch: Callable[[list[str]], list[list[int]]], vocab_size: int, tokenizer_id: str,
                 cache_dir: Path | None) -> NgramTable:
    """The standard-library table for one tokenizer, built on first use (a few seconds) and
    cached under cache_dir (None: not cached)."""
    digest = hashlib.sha256(f"{FORMAT}/{vocab_size}/{tokenizer_id}".encode()).hexdigest()[:16]
    path = cache_dir / "ngram" / f"stdlib-{digest}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            table = NgramTable.load(path)
            if table.vocab_size == vocab_size:
                return table
        except Exception as e:  # a corrupt cache file is rebuilt, never trusted
            log.warning("n-gram cache %s unreadable (%s): rebuilding it", path, e)
    t0 = time.perf_counter()
    texts = []
    for p in stdlib_sources():
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    parts = [np.asarray([*ids, -1], dtype=np.int64) for ids in encode_batch(texts)]
    table = NgramTable.build(np.concatenate(parts) if parts else np.zeros(0, np.int64), vocab_size)
    try:
        if path is not None:
            table.save(path)
    except OSError as e:
        log.warning("could not cache the n-gram table at %s: %s", path, e)
    log.info("built the standard-library n-gram table from %d files in %.1f s", len(texts), time.perf_counter() - t0)
    return table
