"""N-gram tables over a model's token ids: what usually follows the last few tokens.

Used to draft tokens for self-speculation at no model cost (the full model verifies
them, so a wrong guess costs only its place in the verify pass), and as the n-gram
model of superposed decoding. A table of order n keeps, for every context of n-1 tokens
(hashed to 64 bits), each next token with its count, in sorted numpy arrays: a lookup is a
binary search.

The shippable corpus table is built from the Python standard library only (never its
tests, never the dev set), once per tokenizer, and cached on disk. Tables for the open
document and the workspace are built the same way; `NgramMix` pools several tables into
the interpolated next-token probability of superposed decoding.
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

FORMAT = 2  # bump when the table's layout or source set changes
ORDERS = (2, 3, 4, 5, 6)  # contexts of 1 to 5 tokens
MIX = 0x9E3779B97F4A7C15  # odd 64-bit multiplier of the context hash
MASK = (1 << 64) - 1


def hash_step(keys: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """One token into running 64-bit context hashes (uint64 arithmetic wraps)."""
    return (keys ^ (tokens.astype(np.uint64) + np.uint64(1))) * np.uint64(MIX)


def context_key(context: Sequence[int]) -> int:
    """The hash of a context, as `hash_step` computes it, in plain Python ints."""
    k = 0
    for t in context:
        k = ((k ^ (int(t) + 1)) * MIX) & MASK
    return k


@dataclass
class Order:
    """One order's entries, sorted by context, then by count (descending)."""

    ctx: np.ndarray  # [N] uint64 context hashes
    nxt: np.ndarray  # [N] int32 next token
    cnt: np.ndarray  # [N] int32 count


class NgramTable:
    """Counts of (context, next token) for the orders in ORDERS over one vocabulary."""

    def __init__(self, vocab_size: int, orders: dict[int, Order]):
        self.vocab_size = vocab_size
        self.orders = orders

    @classmethod
    def build(cls, ids: np.ndarray, vocab_size: int) -> NgramTable:
        """Count every n-gram of `ids` [T] (documents separated by -1, which no n-gram spans)."""
        ids = np.asarray(ids, dtype=np.int64)
        orders = {}
        for n in ORDERS:
            if len(ids) < n:
                orders[n] = Order(np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.int32))
                continue
            span = len(ids) - n + 1
            ctx = np.zeros(span, dtype=np.uint64)
            ok = np.ones(span, dtype=bool)
            for i in range(n):
                col = ids[i : i + span]
                ok &= col >= 0
                if i < n - 1:
                    ctx = hash_step(ctx, np.maximum(col, 0))
            ctx, nxt = ctx[ok], ids[n - 1 :][ok]
            _, first, counts = np.unique(hash_step(ctx, nxt), return_index=True, return_counts=True)
            c, x = ctx[first], nxt[first]
            order = np.lexsort((-counts, c))  # by context, most frequent next first
            orders[n] = Order(c[order], x[order].astype(np.int32), counts[order].astype(np.int32))
        return cls(vocab_size, orders)

    def run(self, n: int, context: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Next tokens [R] and counts [R] after the last n-1 tokens of context (most frequent first)."""
        lo, hi = self._run(n, context)
        o = self.orders[n]
        return o.nxt[lo:hi], o.cnt[lo:hi]

    def counts(self, n: int, context: Sequence[int], candidates: np.ndarray) -> tuple[np.ndarray, float]:
        """How often each candidate [C] followed the context's last n-1 tokens, and how often anything did."""
        nxt, cnt = self.run(n, context)
        if not len(nxt):
            return np.zeros(len(candidates)), 0.0
        order = np.argsort(nxt)
        at = np.minimum(np.searchsorted(nxt, candidates, sorter=order), len(nxt) - 1)
        hit = nxt[order[at]] == candidates
        return np.where(hit, cnt[order[at]], 0).astype(np.float64), float(cnt.sum())

    def _run(self, n: int, context: Sequence[int]) -> tuple[int, int]:
        """The [start, stop) entries of order n for the last n-1 tokens of context."""
        o, k = self.orders[n], np.uint64(context_key(context[len(context) - (n - 1) :]))
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
            orders = {n: Order(z[f"ctx{n}"].astype(np.uint64), z[f"nxt{n}"], z[f"cnt{n}"]) for n in ORDERS}
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
    files = stdlib_sources()
    table = table_of_files(files, encode_batch, vocab_size)
    try:
        if path is not None:
            table.save(path)
    except OSError as e:
        log.warning("could not cache the n-gram table at %s: %s", path, e)
    log.info("built the standard-library n-gram table from %d files in %.1f s", len(files), time.perf_counter() - t0)
    return table


# The reference's weights of the 2- to 6-gram probabilities (PAPERS.md; not normalised).
MIX_WEIGHTS = {2: 0.01, 3: 0.04, 4: 0.15, 5: 0.18, 6: 0.12}


@dataclass
class Without:
    """A table's counts minus another's: the workspace without the saved copy of the open file
    (the buffer itself, fresher, is a source of its own)."""

    table: NgramTable
    minus: NgramTable

    def counts(self, n: int, context: Sequence[int], candidates: np.ndarray) -> tuple[np.ndarray, float]:
        num, tot = self.table.counts(n, context, candidates)
        num2, tot2 = self.minus.counts(n, context, candidates)
        return np.clip(num - num2, 0, None), max(tot - tot2, 0.0)


class NgramMix:
    """Superposed decoding's n-gram model: `sum_n w_n * P_n(v | last n-1 tokens)` over 2- to
    6-grams, where P_n mixes the sources (open document, workspace, standard library) that
    know the context, each with its weight. A context no source knows is skipped.
    """

    def __init__(self, sources: Sequence[tuple[NgramTable | Without, float]], weights: dict[int, float] | None = None):
        self.sources = list(sources)
        self.weights = weights or MIX_WEIGHTS

    def probs(self, context: Sequence[int], candidates: np.ndarray) -> np.ndarray:
        """P(v | context) [C] for the candidate tokens [C]."""
        out = np.zeros(len(candidates), dtype=np.float64)
        for n, w in self.weights.items():
            if len(context) < n - 1:
                continue
            mixed = np.zeros(len(candidates), dtype=np.float64)
            known = 0.0
            for source, weight in self.sources:
                num, tot = source.counts(n, context, candidates)
                if tot > 0:
                    mixed += weight * num / tot
                    known += weight
            if known > 0:
                out += w * mixed / known
        return out


def source_files(root: Path, near: Path | None = None, max_files: int = 1000, max_bytes: int = 4 << 20) -> list[Path]:
    """The Python files under a workspace root within the limits (the workspace table's
    documented bounds), those in the same top-level folder as `near` first; virtual
    environments, caches and hidden folders are skipped."""
    skip = {"__pycache__", "node_modules", "site-packages", "venv", ".venv", "build", "dist"}
    top = None
    if near is not None and near.is_relative_to(root) and len(near.relative_to(root).parts) > 1:
        top = near.relative_to(root).parts[0]
    found = []
    for p in root.rglob("*.py"):
        parts = p.relative_to(root).parts
        if not any(part in skip or part.startswith(".") for part in parts[:-1]):
            found.append(p)
    found.sort(key=lambda p: (p.relative_to(root).parts[0] != top, p))
    out: list[Path] = []
    total = 0
    for p in found:
        try:
            size = p.stat().st_size
        except OSError:
            continue
        if len(out) >= max_files or total + size > max_bytes:
            break
        out.append(p)
        total += size
    return out


def table_of_files(paths: Sequence[Path], encode_batch: Callable[[list[str]], list[list[int]]],
                   vocab_size: int) -> NgramTable:
    """One table over the given files (unreadable files are skipped)."""
    texts = []
    for p in paths:
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    parts = [np.asarray([*ids, -1], dtype=np.int64) for ids in encode_batch(texts)] if texts else []
    return NgramTable.build(np.concatenate(parts) if parts else np.zeros(0, np.int64), vocab_size)
