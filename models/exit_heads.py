"""Exit heads: light adapters that let an intermediate layer speak through the shared LM head.

A stock model's early layers predict poorly through the final norm and LM head: their
residual stream is not yet in the last layer's space. An adapter per chosen layer moves
it there: `h + up(silu(down(norm(h))))`, low rank, with `up` starting at zero (so an
untrained adapter is the plain shared head). Trained with KL divergence to the final
layer's distribution on the frozen model (`models/train_exit_heads.py`), they are tiny,
shipped as safetensors with their provenance, and loaded for the default model.

A draft shortlist (the most frequent token ids in the training code) lets drafting read
only that slice of the LM head: the head is a fifth of SmolLM2's weights, so reading all
of it per drafted token would eat most of the speed-up. Verification always uses the
full head.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

HEADS_DIR = Path(__file__).parent / "heads"


class ExitAdapter(nn.Module):
    """Residual low-rank adapter [.., D] -> [.., D] in front of the final norm and head."""

    def __init__(self, dim: int, rank: int, eps: float = 1e-5):
        super().__init__()
        self.norm_weight = nn.Parameter(torch.ones(dim))
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        self.eps = eps
        nn.init.zeros_(self.up.weight)

    def forward(self, h: Tensor) -> Tensor:
        x = h.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.norm_weight
        return h + self.up(torch.nn.functional.silu(self.down(x.to(h.dtype))))


@dataclass
class ExitHeads:
    """Adapters by layer (the number of layers run before them), a draft shortlist and metadata."""

    adapters: dict[int, ExitAdapter]
    shortlist: Tensor | None = None  # [K] token ids drafting may propose
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.adapters)

    @property
    def thresholds(self) -> dict[int, float]:
        """Early-exit confidence thresholds by layer, from `benchmarks/calibrate_exits.py` ({} if none)."""
        return {int(l): float(t) for l, t in self.meta.get("exit_thresholds", {}).items()}

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"layer{l}.{k}": v.detach().to(torch.float16).contiguous()
                   for l, a in self.adapters.items() for k, v in a.state_dict().items()}
        if self.shortlist is not None:
            tensors["shortlist"] = self.shortlist.to(torch.int32).contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"draftls": json.dumps(self.meta)})

    @classmethod
    def load(cls, path: Path, dim: int, dtype: torch.dtype = torch.float32) -> ExitHeads:
        """Read heads saved by `save`; safetensors only (never unpickled)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("draftls", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        adapters: dict[int, ExitAdapter] = {}
        for layer in sorted({int(k.split(".")[0][5:]) for k in tensors if k.startswith("layer")}):
            rank = tensors[f"layer{layer}.down.weight"].shape[0]
            a = ExitAdapter(dim, rank)
            a.load_state_dict({k.split(".", 1)[1]: v.to(torch.float32) for k, v in tensors.items()
                               if k.startswith(f"layer{layer}.")})
            adapters[layer] = a.to(dtype).eval().requires_grad_(False)
        shortlist = tensors["shortlist"].long() if "shortlist" in tensors else None
        return cls(adapters, shortlist, meta)


def shipped_heads(model_id: str) -> Path | None:
    """The heads file shipped for a registry model id, if any."""
    path = HEADS_DIR / f"{model_id}.safetensors"
    return path if path.is_file() else None
