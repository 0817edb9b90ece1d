"""Compact Llama-family decoder (Llama, Mistral, Qwen2, SmolLM) with an explicit KV cache.

Module names mirror Hugging Face's (`model.layers.0.self_attn.q_proj`, ...), so an HF
state dict loads as it is. The forward pass is split by layer so that early exit,
speculation and superposition can drive it one segment at a time.
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import ModelConfig


_buffer_sets = itertools.count(1)
"""Numbers each set of cache buffers, across caches: a captured step is tied to one set."""


class KVCache:
    """Per-layer K/V buffers [B, Hkv, S, Dh] with a fill length per layer.

    Layers keep their own lengths because self-speculation runs the early layers ahead
    of the late ones; `truncate` rolls every layer back to at most n positions.
    """

    def __init__(self, cfg: ModelConfig, batch: int, dtype: torch.dtype, device: torch.device):
        self.cfg, self.batch, self.dtype, self.device = cfg, batch, dtype, device
        self.capacity = 0
        self.version = 0  # which set of buffers this is (`_buffer_sets`): new whenever they are replaced
        self.k: list[Tensor] = []
        self.v: list[Tensor] = []
        self.lengths = [0] * cfg.num_layers
        self._grow(256)

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self.capacity)
        shape = (self.batch, self.cfg.num_kv_heads, cap, self.cfg.head_dim)
        k = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.lengths]
        v = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.lengths]
        for i, n in enumerate(self.lengths):
            if n:
                k[i][:, :, :n] = self.k[i][:, :, :n]
                v[i][:, :, :n] = self.v[i][:, :, :n]
        self.k, self.v, self.capacity = k, v, cap
        self.version = next(_buffer_sets)

    def reserve(self, need: int) -> None:
        """Make room for `need` positions in every layer."""
        if need > self.capacity:
            self._grow(need)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, Hkv, T, Dh] after the layer's fill; return the filled views."""
        n, t = self.lengths[layer], k.shape[2]
        if n + t > self.capacity:
            self._grow(n + t)
        self.k[layer][:, :, n : n + t] = k
        self.v[layer][:, :, n : n + t] = v
        self.lengths[layer] = n + t
        return self.k[layer][:, :, : n + t], self.v[layer][:, :, : n + t]

    def write_at(self, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, Hkv, T, Dh] at `slots` [T] (a device tensor, so no host value is read);
        return the whole buffers [B, Hkv, C, Dh]. The fill length is the caller's to set."""
        self.k[layer].index_copy_(2, slots, k)
        self.v[layer].index_copy_(2, slots, v)
        return self.k[layer], self.v[layer]

    def truncate(self, n: int) -> None:
        """Forget every position at or after n, in every layer."""
        self.lengths = [min(length, max(n, 0)) for length in self.lengths]

    def select(self, rows: Tensor) -> None:
        """Reorder or copy batch rows (beam search, or one prompt fanned out to B drafts)."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.batch = int(rows.numel())
        self.version = next(_buffer_sets)


SMALL_M = 16
"""Products with at most this many rows take the `weight @ x^T` path (see `Linear`)."""


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [.., K] @ weight [N, K]^T (+ bias) -> [.., N], fast for the few rows of decoding.

    On this project's CPUs (AMD EPYC, torch's MKL), `x @ W^T` with 1 to 16 rows of x is
    far from the memory-bandwidth floor, while `W @ x^T` with 2 columns reaches it:
    measured, a one-token step of SmolLM2 went from 64 to 30 ms. One row is padded to
    two for that reason. Larger products (prefill, training) keep the usual path, as do
    other devices.
    """
    rows = x.numel() // x.shape[-1] if x.numel() else 0
    if x.device.type != "cpu" or not 0 < rows <= SMALL_M:
        return F.linear(x, weight, bias)
    x2 = x.reshape(rows, x.shape[-1])
    if rows == 1:
        x2 = x2.expand(2, -1).contiguous()
    y = torch.mm(weight, x2.t()).t()[:rows].contiguous()  # [M, N]
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], y.shape[-1])


class Linear(nn.Linear):
    """nn.Linear through `linear` (same parameters and state-dict names)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class Fused:
    """Linear layers of one input run as one product: one weight [sum N, K] whose row blocks
    the layers' weights become views of (no second copy). On the CPU each product is a
    call with a fixed cost, so q/k/v and gate/up as two calls save about 7% of a
    decoding step (BENCHMARKS.md, issue 7's pass table); the logits are bit for bit the same. The weight is rebuilt when the
    layers' storage changes (a `.to()`), and training (grad enabled) keeps separate calls.
    """

    def __init__(self, *parts: nn.Linear):
        self.parts = parts
        self.sizes = [p.out_features for p in parts]
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None
        self._ptrs: list[int] = []

    def __call__(self, x: Tensor) -> list[Tensor]:
        if torch.is_grad_enabled() and any(p.weight.requires_grad for p in self.parts):
            return [p(x) for p in self.parts]
        if self.weight is None or [p.weight.data_ptr() for p in self.parts] != self._ptrs:
            self._fuse()
        return list(linear(x, self.weight, self.bias).split(self.sizes, -1))  # type: ignore[arg-type]

    @torch.no_grad()
    def _fuse(self) -> None:
        # A model gives all of q/k/v (or gate/up) a bias, or none.
        self.weight = torch.cat([p.weight for p in self.parts]).contiguous()
        self.bias = torch.cat([p.bias for p in self.parts]).contiguous() if self.parts[0].bias is not None else None
        start = 0
        for p, n in zip(self.parts, self.sizes):
            p.weight.data = self.weight[start : start + n]
            if self.bias is not None:
                p.bias.data = self.bias[start : start + n]  # type: ignore[union-attr]
            start += n
        self._ptrs = [p.weight.data_ptr() for p in self.parts]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in float32 as HF does, then cast back.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor, start: int, window: int | None = None) -> Tensor:
    """Causal grouped-query attention: q [B, H, T, Dh] at positions start.., k/v [B, Hkv, S, Dh]."""
    t = q.shape[2]
    if window is not None and k.shape[2] > window + t - 1:
        # Keys older than every query's window are never seen: drop them up front.
        k, v = k[:, :, -(window + t - 1) :], v[:, :, -(window + t - 1) :]
        start = window - 1
    mask = _causal_mask(t, start, k.shape[2], window, q.device) if t > 1 or window is not None else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


@functools.lru_cache(maxsize=8)
def _causal_mask(t: int, start: int, s: int, window: int | None, device: torch.device) -> Tensor:
    """[T, S] bool: query i sits at position start+i and may see keys 0..start+i (within the
    window). Cached: every layer of one pass asks for the same mask."""
    rows = torch.arange(t, device=device)[:, None] + start
    cols = torch.arange(s, device=device)[None, :]
    mask = cols <= rows
    if window is not None:
        mask = mask & (cols > rows - window)
    return mask


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.h, self.n_kv, self.hd = h, kv, hd
        self.window = cfg.sliding_window
        self.q_proj = Linear(d, h * hd, bias=cfg.qkv_bias)
        self.k_proj = Linear(d, kv * hd, bias=cfg.qkv_bias)
        self.v_proj = Linear(d, kv * hd, bias=cfg.qkv_bias)
        self.o_proj = Linear(h * hd, d, bias=cfg.o_bias)
        self.qkv = Fused(self.q_proj, self.k_proj, self.v_proj)

    def kv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """Keys (roped) and values [B, Hkv, T, Dh] for normed input x [B, T, D]."""
        return self._heads_kv(self.k_proj(x), self.v_proj(x), cos, sin)

    def _heads_kv(self, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """Projected k, v [B, T, Hkv*Dh] -> roped keys and values [B, Hkv, T, Dh]."""
        b, t, _ = k.shape
        k = k.view(b, t, self.n_kv, self.hd).transpose(1, 2)
        v = v.view(b, t, self.n_kv, self.hd).transpose(1, 2)
        return k * cos + rotate_half(k) * sin, v

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache, layer: int,
                visible: Tensor | None = None, slots: Tensor | None = None) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x)
        q = q.view(b, t, self.h, self.hd).transpose(1, 2)  # [B, H, T, Dh]
        q = q * cos + rotate_half(q) * sin
        k, v = self._heads_kv(k, v, cos, sin)
        start = cache.lengths[layer]
        if slots is None:
            k_all, v_all = cache.append(layer, k, v)  # [B, Hkv, S, Dh]
        else:  # a fixed-shape step: the whole buffers, the unfilled tail masked out by `visible`
            k_all, v_all = cache.write_at(layer, slots, k, v)  # [B, Hkv, C, Dh]
        if visible is None:
            y = attend(q, k_all, v_all, start, self.window)  # [B, H, T, Dh]
        else:  # an explicit [T, S] mask: several drafts side by side in one sequence
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=visible, enable_gqa=self.h != self.n_kv)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.h * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, f, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = Linear(d, f, bias=bias)
        self.up_proj = Linear(d, f, bias=bias)
        self.down_proj = Linear(f, d, bias=bias)
        self.gate_up = Fused(self.gate_proj, self.up_proj)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache, layer: int,
                visible: Tensor | None = None, slots: Tensor | None = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, visible, slots)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaModel(nn.Module):
    """Decoder plus LM head; call it through `run_layers` and `logits`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        inv_freq, self.rope_scale = cfg.inv_freq()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rope(self, start: int, t: int, dtype: torch.dtype, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """cos, sin [T, Dh] for positions start..start+t (or the given positions [T])."""
        if positions is None:
            pos = torch.arange(start, start + t, device=self.inv_freq.device, dtype=torch.float)
        else:
            pos = positions.to(self.inv_freq.device, torch.float)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.rope_scale).to(dtype), (emb.sin() * self.rope_scale).to(dtype)

    def run_layers(self, h: Tensor, start: int, stop: int, cache: KVCache) -> Tensor:
        """Run layers [start, stop) on the residual stream h [B, T, D] for new positions."""
        pos = cache.lengths[start] if start < stop else 0
        cos, sin = self.rope(pos, h.shape[1], h.dtype)
        for i in range(start, stop):
            if cache.lengths[i] != pos:
                raise RuntimeError(f"layer {i} holds {cache.lengths[i]} positions, layer {start} {pos}")
            h = self.model.layers[i](h, cos, sin, cache, i)
        return h

    def run_tree(self, h: Tensor, positions: Tensor, visible: Tensor, cache: KVCache) -> Tensor:
        """All layers on h [1, T, D] whose tokens sit at `positions` [T] and each see only the
        keys `visible` [T, S] marks (S = cache length + T): drafts side by side in one cache."""
        cos, sin = self.rope(0, h.shape[1], h.dtype, positions)
        mask = visible.to(h.device)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, cos, sin, cache, i, mask)
        return h

    def run_fixed(self, h: Tensor, slots: Tensor, positions: Tensor, visible: Tensor, cache: KVCache) -> Tensor:
        """All layers and the head on h [B, T, D]: token i's keys and values go to cache slot
        slots[i], rotated to positions[i], and it sees the keys visible[i] marks over the whole
        buffer [T, C]. No shape, address or host value changes from one call to the next, so a
        CUDA graph can replay it. Logits [B, T, V]; `cache.lengths` are left to the caller."""
        cos, sin = self.rope(0, h.shape[1], h.dtype, positions)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, cos, sin, cache, i, visible, slots)
        return self.logits(h)

    def logits(self, h: Tensor) -> Tensor:
        """Final norm and shared LM head: [B, T, D] -> [B, T, V] in float32."""
        return self.lm_head(self.model.norm(h)).float()

    def fill_kv(self, h: Tensor, start: int, stop: int, cache: KVCache) -> None:
        """State copying: give layers [start, stop) K/V computed from the exited state h."""
        if start >= stop:
            return
        pos = cache.lengths[start]
        cos, sin = self.rope(pos, h.shape[1], h.dtype)
        for i in range(start, stop):
            layer = self.model.layers[i]
            k, v = layer.self_attn.kv(layer.input_layernorm(h), cos, sin)
            cache.append(i, k, v)
