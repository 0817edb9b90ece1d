"""Model configuration for the Llama family, read from a Hugging Face `config.json`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")
"""`model_type` values our own model code runs (SmolLM and SmolLM2 are `llama`)."""


def default_exit_layers(n_layers: int) -> list[int]:
    """Where self-speculation drafts without trained exit heads: a quarter, a third and half
    of the depth (the ONNX export cuts its segments there too)."""
    return sorted({max(1, n_layers // 4), max(1, n_layers // 3), max(1, n_layers // 2)} - {n_layers})


class UnsupportedModelError(ValueError):
    """The checkpoint's architecture or a feature of it is not something we can run."""


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a Llama-family decoder; built from an HF config dict."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_parameters: dict[str, Any] = field(default_factory=dict)
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None  # Mistral v0.1, Qwen2 with use_sliding_window
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "ModelConfig":
        """Map an HF `config.json` dict; raise `UnsupportedModelError` for other families."""
        model_type = cfg.get("model_type", "")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"model_type {model_type!r} is not supported; draftls runs the Llama family: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)} (SmolLM and SmolLM2 are llama)"
            )
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModelError(f"hidden_act {act!r} is not supported (only silu)")
        heads = cfg["num_attention_heads"]
        rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
        theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
        rope.setdefault("rope_type", rope.pop("type", "default"))
        rope["rope_theta"] = theta
        if rope["rope_type"] not in ("default", "linear", "llama3", "yarn"):
            raise UnsupportedModelError(f"rope_type {rope['rope_type']!r} is not supported")
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        bias = bool(cfg.get("attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate_size=cfg["intermediate_size"],
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            rope_theta=theta,
            rope_parameters=rope,
            max_position_embeddings=int(cfg.get("max_position_embeddings", 8192)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases and no o_proj bias; Llama has one flag for all four.
            qkv_bias=bias or model_type == "qwen2",
            o_bias=bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            sliding_window=_window(cfg, model_type),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    def inv_freq(self) -> tuple[torch.Tensor, float]:
        """RoPE inverse frequencies [head_dim/2] and the attention scaling factor."""
        rope_type = self.rope_parameters.get("rope_type", "default")
        if rope_type == "default":
            exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim
            return 1.0 / (self.rope_theta**exponents), 1.0
        # Scaled variants: reuse transformers' reference formulas so that parity holds.
        from transformers import LlamaConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        hf = LlamaConfig(
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters=dict(self.rope_parameters),
        )
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf, None)
        return inv_freq.float(), float(scaling)

    @property
    def num_params(self) -> int:
        """Parameter count (tied embeddings counted once)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        attn = d * self.head_dim * (self.num_heads * 2 + self.num_kv_heads * 2)
        per_layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else v * d
        return v * d + head + self.num_layers * per_layer + d

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise UnsupportedModelError("num_attention_heads must be a multiple of num_key_value_heads")
        if not math.isfinite(self.rope_theta) or self.rope_theta <= 0:
            raise UnsupportedModelError(f"bad rope_theta {self.rope_theta}")


def _window(cfg: dict[str, Any], model_type: str) -> int | None:
    """Sliding attention window, if the checkpoint uses one."""
    window = cfg.get("sliding_window")
    uses = model_type == "mistral" or (model_type == "qwen2" and cfg.get("use_sliding_window"))
    return int(window) if uses and window else None
