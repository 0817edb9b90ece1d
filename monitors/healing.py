"""Token healing: the first generated tokens must reproduce the text cut from the prompt."""

from __future__ import annotations

import torch

from monitors.base import roll_back
from monitors.vocab import VocabIndex

# Stack entry for a state whose last token left the heal text (the decoder accepted a
# token outside the mask): nothing can repair it, so the mask is all-False until rollback.
_FAILED = -1


class HealingMonitor:
    """Constrain the first tokens to reproduce `heal`, then step aside.

    It is `essential`: what the user typed wins over any other monitor's opinion.

    The engine backs the prompt up to a clean token boundary (`obj.ap` -> `obj.`, or an
    indentation run after a newline) and removes `heal`. A token is allowed while it
    keeps the output on `heal`: its bytes are a prefix of what remains, or what remains
    and more. Special tokens never are: EOS here would lose what the user typed.
    """

    essential = True

    def __init__(self, index: VocabIndex, heal: bytes) -> None:
        self._index = index
        self._heal = bytes(heal)
        # Bytes of `heal` reproduced after each accepted token; [0] is the start.
        # Every token pushes one entry (also after done), so rollback(n) is n pops.
        self._consumed: list[int] = [0]

    @property
    def heal(self) -> bytes:
        """The text the first tokens must reproduce."""
        return self._heal

    @property
    def consumed(self) -> int:
        """How many bytes of `heal` are reproduced so far (-1 once failed)."""
        return self._consumed[-1]

    @property
    def failed(self) -> bool:
        """True when an accepted token left the heal text (the mask is then all-False)."""
        return self._consumed[-1] == _FAILED

    @property
    def done(self) -> bool:
        """True once `heal` is fully reproduced (a rollback can undo it)."""
        return self._consumed[-1] >= len(self._heal)

    def allowed(self) -> torch.Tensor | None:
        """Return the mask [V] of tokens that stay on the heal text, or None when done."""
        consumed = self._consumed[-1]
        if consumed == _FAILED:
            return self._index.mask(())
        if consumed >= len(self._heal):
            return None
        return self._index.forced_mask(self._heal[consumed:])

    def accept(self, token_id: int) -> None:
        """Advance by one generated token."""
        consumed = self._consumed[-1]
        if consumed == _FAILED or consumed >= len(self._heal):
            self._consumed.append(consumed)
            return
        piece = self._index.token_bytes(token_id)
        rest = self._heal[consumed:]
        # Empty pieces (specials, ids past the tokenizer) are never allowed while healing.
        if piece and (rest.startswith(piece) or piece.startswith(rest)):
            self._consumed.append(consumed + len(piece))
        else:
            self._consumed.append(_FAILED)

    def rollback(self, n: int) -> None:
        """Undo the last n accepted tokens exactly."""
        roll_back(self._consumed, n)

    def fork(self) -> HealingMonitor:
        """Return an independent copy with the same state."""
        other = HealingMonitor(self._index, self._heal)
        other._consumed = list(self._consumed)
        return other
