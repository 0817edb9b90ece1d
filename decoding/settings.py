"""The one typed settings object, shared by the server, the CLI and batch mode."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args, get_type_hints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Every knob, fully defaulted. Wire names are camelCase (`maxNewTokens`)."""

    model: str = "smollm2-135m"
    backend: Literal["auto", "torch", "onnx"] = "auto"  # auto: torch on a CUDA GPU (CUDA graphs), else ONNX Runtime where installed
    # ONNX weights: float32, Q8_0 or Q4_1 blocks (models/quantize.py); auto: int8 with AVX-512 VNNI, else float32
    quantize: Literal["auto", "none", "int8", "int4"] = "auto"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    drafts: int = 3
    decoder: Literal["greedy", "sampling", "superposed"] = "greedy"
    batch_drafts: bool = True  # decode the drafts side by side, one forward pass per token for all
    max_new_tokens: int = 48
    mode: Literal["line", "block", "auto"] = "auto"
    context_tokens: int = 1536  # prefix window; the FIM suffix window is a quarter of it
    time_budget_ms: int = 3000
    monitors: bool = True  # monitor-guided decoding (token healing is always on)
    name_affinity: float = 6.0  # logit bonus after `x = obj.` for the names `x` points to; 0: off
    early_exit: bool = False  # later issue: dynamic early exit
    speculative: bool = False  # lossless self-speculative decoding (greedy drafts only)
    stop_on_uncertain: bool = False  # end a draft where the model is unsure (see uncertain_threshold)
    uncertain_threshold: float = 0.2  # stop below this p1 - p2 margin; chosen from the dev-set curve (BENCHMARKS.md)
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    kv_reuse: bool = True
    token_healing: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, base: "Settings | None" = None) -> tuple["Settings", list[str]]:
        """Settings from wire names (or snake_case); bad values fall back with a warning each."""
        base = base or cls()
        hints = get_type_hints(cls)
        by_wire = {_camel(f.name): f.name for f in fields(cls)} | {f.name: f.name for f in fields(cls)}
        changes: dict[str, Any] = {}
        warnings: list[str] = []
        for key, value in (data or {}).items():
            name = by_wire.get(key)
            if name is None:
                warnings.append(f"unknown setting {key!r} ignored")
                continue
            ok, coerced = _coerce(hints[name], value)
            if ok and _in_range(name, coerced):
                changes[name] = coerced
            else:
                default = getattr(cls(), name)
                warnings.append(f"setting {key}={value!r} is invalid; using the default {default!r}")
                changes[name] = default
        for w in warnings:
            log.warning(w)
        return dataclasses.replace(base, **changes), warnings

    @property
    def load_quantize(self) -> str:
        """`quantize` as the model is loaded with it: `auto` is resolved per CPU at load
        (models.onnx_backend.quantize_for), but float32 with speculation on. int8 rounds the
        activations differently in a one-token step and a multi-token verify pass (logits up to
        0.57 apart, BENCHMARKS.md), so speculation would not give plain decoding's tokens."""
        return "none" if self.quantize == "auto" and self.speculative else self.quantize

    def to_wire(self) -> dict[str, Any]:
        """camelCase dict, as a client sends it."""
        return {_camel(f.name): getattr(self, f.name) for f in fields(self)}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _coerce(hint: Any, value: Any) -> tuple[bool, Any]:
    choices = get_args(hint)
    if choices:  # Literal
        return (value in choices, value)
    if hint is bool:
        return (isinstance(value, bool), value)
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok or (isinstance(value, float) and value.is_integer())
        return (ok, int(value) if ok else value)
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (ok, float(value) if ok else value)
    if hint is str:
        return (isinstance(value, str) and bool(value.strip()), value)
    return (False, value)


_RANGES: dict[str, tuple[float, float]] = {
    "drafts": (1, 16),
    "max_new_tokens": (1, 1024),
    "context_tokens": (16, 32768),
    "time_budget_ms": (10, 600_000),
    "temperature": (0.0, 5.0),
    "top_p": (0.01, 1.0),
    "uncertain_threshold": (0.0, 1.0),
    "name_affinity": (0.0, 20.0),
    "seed": (0, 2**31 - 1),
}


def _in_range(name: str, value: Any) -> bool:
    lo, hi = _RANGES.get(name, (None, None))
    return lo is None or lo <= value <= hi
