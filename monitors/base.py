"""The Monitor protocol: what a decoder asks of every constraint on the next token."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Monitor(Protocol):
    """A constraint on generated tokens that the decoder consults before each token.

    Masks are bool tensors of shape [V] over the model vocabulary. They may be shared
    (cached), so callers must never change them in place. An all-False mask means the
    constraint cannot be satisfied: the decoder stops that draft or drops the monitor.
    """

    @property
    def done(self) -> bool:
        """True when the monitor will not constrain again in its current state."""
        ...

    def allowed(self) -> torch.Tensor | None:
        """Return the bool mask [V] of tokens allowed next, or None when unconstrained."""
        ...

    def accept(self, token_id: int) -> None:
        """Advance the state by one generated token."""
        ...

    def rollback(self, n: int) -> None:
        """Undo the last n accepted tokens exactly."""
        ...

    def fork(self) -> Monitor:
        """Return an independent copy with the same state (one per draft)."""
        ...


def roll_back(history: list, n: int) -> None:
    """Undo the last n accepted tokens of a per-token history whose first entry is the start."""
    if not 0 <= n < len(history):
        raise ValueError(f"cannot roll back {n} of {len(history) - 1} tokens")
    if n:
        del history[-n:]
