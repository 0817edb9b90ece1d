"""Quality metrics for completions against the true rest of the line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def first_line(text: str) -> str:
    """The part of a completion that lands on the cursor's line, trailing spaces dropped."""
    return text.split("\n", 1)[0].rstrip()


def leading_identifier(text: str) -> str:
    """The identifier a completion starts with ('' if it starts with anything else)."""
    m = _IDENT.match(text)
    return m.group(0) if m else ""


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute), O(len(a)·len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(a: str, b: str) -> float:
    """1 - normalised edit distance; 1.0 for equal strings (two empty strings included)."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


@dataclass(frozen=True)
class CaseScore:
    """How one case's drafts compare with its target."""

    exact_top: bool
    exact_any: bool
    edit_sim: float
    empty: bool
    ident_top: bool | None = None  # deref cases only
    ident_any: bool | None = None


def score(drafts: Sequence[str], target: str, ident: str | None = None) -> CaseScore:
    """Score ranked draft texts against the true rest of the line (and identifier)."""
    truth = first_line(target)
    lines = [first_line(d) for d in drafts]
    top = lines[0] if lines else ""
    idents = [leading_identifier(d) for d in drafts]
    return CaseScore(
        exact_top=bool(lines) and top == truth,
        exact_any=truth in lines,
        edit_sim=edit_similarity(top, truth),
        empty=not top,
        ident_top=None if ident is None else bool(idents) and idents[0] == ident,
        ident_any=None if ident is None else ident in idents,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0-100), linear between the closest ranks; nan for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * min(max(q, 0.0), 100.0) / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (k - lo))


def summarize(scores: Sequence[CaseScore], latencies_ms: Sequence[float], tokens: int, decode_ms: float) -> dict[str, float]:
    """Aggregate metrics over cases: shares in [0, 1], latency in ms, throughput in tokens/s."""
    n = len(scores)

    def share(values: Sequence[bool]) -> float:
        return sum(values) / len(values) if values else float("nan")

    idents = [s for s in scores if s.ident_top is not None]
    return {
        "cases": n,
        "exact_top": share([s.exact_top for s in scores]),
        "exact_any": share([s.exact_any for s in scores]),
        "edit_sim": sum(s.edit_sim for s in scores) / n if n else float("nan"),
        "ident_top": share([bool(s.ident_top) for s in idents]),
        "ident_any": share([bool(s.ident_any) for s in idents]),
        "empty": share([s.empty for s in scores]),
        "latency_p50_ms": percentile(latencies_ms, 50),
        "latency_p90_ms": percentile(latencies_ms, 90),
        "tokens_per_s": tokens / (decode_ms / 1000) if decode_ms > 0 else float("nan"),
    }
