"""An independent reference for the sink + window attention pattern.

A from-scratch float64 Llama forward over the weights of a Hugging Face model.
It keeps every token's pre-RoPE key and value forever (no ring, no slots, no
masks) and, for each query, builds the key set the design promises by hand:
the pinned keys rotated to their virtual positions for that chunk, and the
window keys at their true positions. Nothing of streamd.cache is used.
"""

from __future__ import annotations

import math

import torch


def _rotate(x: torch.Tensor, position: float, inv_freq: torch.Tensor) -> torch.Tensor:
    # x: [..., D]; rotate-half RoPE at one position, in float64
    angles = position * inv_freq
    cos = torch.cat((angles.cos(), angles.cos()))
    sin = torch.cat((angles.sin(), angles.sin()))
    half = x.shape[-1] // 2
    rotated_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated_half * sin


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


class ReferenceStream:
    def __init__(self, model: torch.nn.Module, *, pinned: int, window: int, origin: int = 0):
        cfg = model.config
        self.cfg = cfg
        self.pinned, self.window, self.origin = pinned, window, origin
        self.kept_from = origin + pinned  # raised when a resize drops older tokens
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        dim = self.head_dim
        theta = cfg.rope_parameters["rope_theta"]
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        self.w = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}
        self.keys: list[dict[int, torch.Tensor]] = [{} for _ in range(cfg.num_hidden_layers)]
        self.values: list[dict[int, torch.Tensor]] = [{} for _ in range(cfg.num_hidden_layers)]

    @property
    def stream_start(self) -> int:
        return self.origin + self.pinned

    def _visible(self, query: int, anchor: int, fence: int | None) -> list[tuple[int, float]]:
        """(stored position, position to rotate the key to) for one query.

        With a fence (a summary after stream head `fence`), the window stays
        where it stood at the fence instead of sliding with the query.
        """
        keys = []
        for i in range(self.pinned):
            true = self.origin + i
            if true > query:
                continue
            virtual = true if query < self.stream_start else anchor - self.pinned + i
            keys.append((true, float(virtual)))
        seen_from = query if fence is None else min(query, fence)
        lowest = max(self.stream_start, self.kept_from, seen_from - self.window + 1)
        keys.extend((p, float(p)) for p in range(lowest, query + 1))
        return keys

    def forward(self, ids: list[int], first: int, fence: int | None = None) -> torch.Tensor:
        """Logits [n, vocab] (float64) for tokens at positions first..first+n-1."""
        w, cfg = self.w, self.cfg
        anchor_query = first if fence is None else fence
        anchor = max(self.stream_start, anchor_query - self.window + 1)
        positions = list(range(first, first + len(ids)))
        h = w["model.embed_tokens.weight"][torch.tensor(ids)]
        group = self.heads // self.kv_heads
        for layer in range(cfg.num_hidden_layers):
            p = f"model.layers.{layer}."
            x = _rms_norm(h, w[p + "input_layernorm.weight"], cfg.rms_norm_eps)
            q = (x @ w[p + "self_attn.q_proj.weight"].T).view(len(ids), self.heads, self.head_dim)
            k = (x @ w[p + "self_attn.k_proj.weight"].T).view(
                len(ids), self.kv_heads, self.head_dim
            )
            v = (x @ w[p + "self_attn.v_proj.weight"].T).view(
                len(ids), self.kv_heads, self.head_dim
            )
            for row, pos in enumerate(positions):
                self.keys[layer][pos] = k[row]
                self.values[layer][pos] = v[row]
            out = torch.zeros(len(ids), self.heads, self.head_dim, dtype=torch.float64)
            for row, pos in enumerate(positions):
                visible = self._visible(pos, anchor, fence)
                ks = torch.stack(
                    [_rotate(self.keys[layer][s], at, self.inv_freq) for s, at in visible]
                )
                vs = torch.stack([self.values[layer][s] for s, _ in visible])
                qr = _rotate(q[row], float(pos), self.inv_freq)  # [H, D]
                for head in range(self.heads):
                    kv = head // group
                    scores = ks[:, kv, :] @ qr[head] / math.sqrt(self.head_dim)
                    out[row, head] = torch.softmax(scores, 0) @ vs[:, kv, :]
            h = h + out.reshape(len(ids), -1) @ w[p + "self_attn.o_proj.weight"].T
            x = _rms_norm(h, w[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
            gate = x @ w[p + "mlp.gate_proj.weight"].T
            up = x @ w[p + "mlp.up_proj.weight"].T
            h = h + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
        h = _rms_norm(h, w["model.norm.weight"], cfg.rms_norm_eps)
        head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        return h @ head.T
