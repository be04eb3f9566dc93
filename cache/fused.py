"""A one-token decode forward for Llama-family models, with q/k/v and gate/up fused.

Why: a small model's decode step is bound by kernel launches. The arithmetic is the model's
own (greedy tokens match), and its Linear modules are re-pointed at views of the fused weights
(no extra memory). Other models decode through their own forward (`fusion_unsupported`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .decode_attention import (
    decode_attention,
    decode_attention_cpu,
    decode_attention_reference,
    triton_available,
)
from .decode_weights import LayerProjections, decode_projections
from .families import FAMILIES, layer_types
from .plan import ForwardPlan
from .ring import StreamCache
from .single_query import sdpa_faster_on_cpu

FUSABLE_MODEL_TYPES = frozenset(kind for kind, family in FAMILIES.items() if family.fused)


@dataclass(frozen=True)
class FusedLayer:
    """One decoder layer's weights; qkv and gate_up are the fused tensors."""

    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [q_dim + 2 * kv_dim, hidden]
    qkv_bias: torch.Tensor | None  # [q_dim + 2 * kv_dim] (qwen2)
    o: torch.Tensor  # [hidden, q_dim]
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    down: torch.Tensor  # [hidden, intermediate]
    q_norm: torch.Tensor | None = None  # [D]: Qwen3's RMSNorm of each head's q, before RoPE
    k_norm: torch.Tensor | None = None  # [D]: the same for k


# One fusion per model object: several runners (the bench builds a few) share it.
_FUSED: weakref.WeakKeyDictionary[torch.nn.Module, list[FusedLayer]] = weakref.WeakKeyDictionary()


def fusion_unsupported(model: Any) -> str | None:
    """Why `model` cannot use the fused step, or None if it can."""
    config = model.config
    if config.model_type not in FUSABLE_MODEL_TYPES:
        return f"model type {config.model_type!r} is not one of {sorted(FUSABLE_MODEL_TYPES)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} is not silu"
    if getattr(config, "pretraining_tp", 1) != 1 or getattr(config, "mlp_bias", False):
        return "pretraining_tp > 1 or an MLP bias"
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "norm") or not hasattr(inner, "rotary_emb"):
        return f"{type(model).__name__} does not have the Llama module layout"
    linears = [m for layer in layers for m in _layer_linears(layer)]
    if any(type(m) is not torch.nn.Linear for m in linears):
        return "some projections are not plain nn.Linear (a quantised model?)"
    if len({(m.weight.dtype, m.weight.device) for m in linears}) != 1:
        return "the projections do not share one dtype and device"
    return None


def _layer_linears(layer: Any) -> list[Any]:
    attn, mlp = layer.self_attn, layer.mlp
    projections = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj]
    return [*projections, mlp.gate_proj, mlp.up_proj, mlp.down_proj]


def fused_layers(model: Any) -> list[FusedLayer]:
    """Fuse q/k/v and gate/up of every layer (once per model) and return the weights."""
    if model not in _FUSED:
        with torch.no_grad():
            _FUSED[model] = [_fuse_layer(layer) for layer in model.model.layers]
    return _FUSED[model]


def _fuse_layer(layer: Any) -> FusedLayer:
    attn, mlp = layer.self_attn, layer.mlp
    qkv, qkv_bias = _fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
    gate_up, _ = _fuse_linears([mlp.gate_proj, mlp.up_proj])
    return FusedLayer(
        input_norm=layer.input_layernorm.weight,
        qkv=qkv,
        qkv_bias=qkv_bias,
        o=attn.o_proj.weight,
        o_bias=attn.o_proj.bias,
        post_norm=layer.post_attention_layernorm.weight,
        gate_up=gate_up,
        down=mlp.down_proj.weight,
        q_norm=_weight_of(getattr(attn, "q_norm", None)),
        k_norm=_weight_of(getattr(attn, "k_norm", None)),
    )


def _weight_of(norm: Any) -> torch.Tensor | None:
    return None if norm is None else norm.weight


def _fuse_linears(linears: list[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One [sum(out), in] weight (and bias); each Linear now holds a view of it.

    Runs once at load: each projection is copied into its rows of one tensor
    allocated for all of them.
    """
    first = linears[0].weight
    total = sum(m.weight.shape[0] for m in linears)
    weight = first.new_empty((total, first.shape[1]))
    has_bias = all(m.bias is not None for m in linears)
    bias = first.new_empty(total) if has_bias else None
    start = 0
    for m in linears:
        rows = slice(start, start + m.weight.shape[0])
        weight[rows].copy_(m.weight)
        m.weight = torch.nn.Parameter(weight[rows], requires_grad=False)
        if bias is not None:
            bias[rows].copy_(m.bias)
            m.bias = torch.nn.Parameter(bias[rows], requires_grad=False)
        start = rows.stop
    return weight, bias


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The Llama RMSNorm, in its order of operations (fp32 statistics, then the weight)."""
    # F.rms_norm is x * rsqrt(mean(x^2) + eps) in those steps, in fewer dispatched ops
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * normed.to(x.dtype)


class FusedDecodeStep:
    """forward(plan, token) like RingModel.forward, for one token, over fused weights."""

    def __init__(
        self, model: Any, ring: StreamCache, attention_op: bool = True, weights: str = "model"
    ) -> None:
        reason = fusion_unsupported(model)
        if reason is not None:
            raise ValueError(f"no fused decode step: {reason}")
        config = model.config
        self.ring = ring
        # streamd::decode_attention where its Triton kernels run (two a layer), else the
        # same arithmetic as inline torch ops: on a CPU the custom op's dispatch alone
        # would cost about as much as the attention itself.
        # On a CPU, fewer ops (each costs microseconds) and the mask as a float bias.
        self._cpu = ring.device.type == "cpu"
        kv_heads, dim = ring.shape.kv_heads, ring.shape.head_dim
        heads = int(config.num_attention_heads)
        self._slice_kv = self._cpu and sdpa_faster_on_cpu(ring.dtype, heads, kv_heads, dim)
        self._decode_attention: Any = decode_attention_reference
        if attention_op and triton_available(ring.device):
            self._decode_attention = decode_attention
        elif self._cpu:
            self._decode_attention = decode_attention_cpu
        self.layers = fused_layers(model)
        self.projections, self.lm_head = decode_projections(model, self.layers, weights)
        self._sliding = [kind == "sliding_attention" for kind in layer_types(config)]
        self.embed = model.get_input_embeddings().weight
        self.final_norm = model.model.norm.weight
        self.rotary = model.model.rotary_emb
        self.eps = float(config.rms_norm_eps)
        self.heads = int(config.num_attention_heads)
        self.head_dim = ring.shape.head_dim
        self.q_dim = self.heads * self.head_dim
        self.intermediate = int(config.intermediate_size)
        # rotate_half(x) == roll(x, D/2) * [-1.., +1..]: one gather the compiler fuses
        # into the rotation (the in-place halves of rope.rotate_half break its graph).
        half = self.head_dim // 2
        sign = torch.ones(self.head_dim, dtype=self.embed.dtype, device=self.embed.device)
        sign[:half] = -1
        self._rotate_sign = sign

    def forward(self, plan: ForwardPlan, token: torch.Tensor) -> torch.Tensor:
        """token: [1, 1] int64 -> logits [1, 1, vocab]; K/V written to plan.write_slots."""
        h = F.embedding(token, self.embed)  # [1, 1, hidden]
        cos, sin = self.rotary(h, plan.position_ids)  # [1, 1, D] each, model dtype
        cos, sin = cos.view(-1), (sin * self._rotate_sign).view(-1)  # [D] each
        # Where SDPA runs on a CPU, attend over the slots up to this token's only: the
        # scratch slots after it are empty (masked), and reading them costs as much as
        # reading any. The grouped matmuls would copy such a slice: they read them all.
        upto = int(plan.write_slots[-1]) + 1 if self._slice_kv else self.ring.layout.slots
        masks = {sliding: self._mask(plan, sliding, upto) for sliding in set(self._sliding)}
        pairs = zip(self.layers, self.projections, strict=True)
        for index, (layer, projections) in enumerate(pairs):
            x = _rms_norm(h, layer.input_norm, self.eps)
            mask = masks[self._sliding[index]]
            h = h + self._attention(index, layer, projections, x, plan, mask, upto, cos, sin)
            h = h + self._mlp(projections, _rms_norm(h, layer.post_norm, self.eps))
        return self.lm_head(_rms_norm(h, self.final_norm, self.eps))

    def _mask(self, plan: ForwardPlan, sliding: bool, upto: int) -> torch.Tensor:
        """The slots this step attends among the first `upto`: [upto] bool, or on a CPU a
        float bias [1, 1, 1, upto] (0 = attend, -inf = not)."""
        mask = plan.layer_mask(sliding).view(-1)[:upto]
        if not self._cpu:
            return mask
        bias = torch.zeros(mask.shape, dtype=self.final_norm.dtype, device=mask.device)
        return bias.masked_fill_(~mask, float("-inf")).view(1, 1, 1, -1)

    def _attention(
        self,
        index: int,
        layer: FusedLayer,
        projections: LayerProjections,
        x: torch.Tensor,
        plan: ForwardPlan,
        mask: torch.Tensor,
        upto: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        """x: [1, 1, hidden]; mask: see _mask; cos, sin: [D] -> [1, 1, hidden]; this token's
        K/V go into the ring."""
        qkv = projections.qkv(x).view(-1)
        if layer.q_norm is not None and layer.k_norm is not None:
            self._norm_q_and_k(qkv, layer.q_norm, layer.k_norm)
        out = self._decode_attention(
            qkv,
            cos,
            sin,
            plan.write_slots,
            mask,
            *self._kv(index, upto),
            self.heads,
            self.head_dim**-0.5,
        )  # [heads * D]
        return projections.o(out.reshape(1, 1, self.q_dim))

    def _kv(self, index: int, upto: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s keys and values [1, kv_heads, slots, D]; where SDPA runs on a
        CPU only the first `upto` slots (views: the writes land in the ring)."""
        keys, values = self.ring.keys[index], self.ring.values[index]
        if self._slice_kv:
            return keys[:, :, :upto], values[:, :, :upto]
        return keys, values

    def _norm_q_and_k(self, qkv: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor) -> None:
        """qkv: [(heads + 2 kv) * D]; each head of q and of k RMS-normed in place (no new
        qkv tensor a step)."""
        kv_dim = self.ring.shape.kv_heads * self.head_dim
        q = qkv[: self.q_dim].view(-1, self.head_dim)
        k = qkv[self.q_dim : self.q_dim + kv_dim].view(-1, self.head_dim)
        q.copy_(_rms_norm(q, q_norm, self.eps))
        k.copy_(_rms_norm(k, k_norm, self.eps))

    def _mlp(self, projections: LayerProjections, x: torch.Tensor) -> torch.Tensor:
        gate, up = projections.gate_up(x).split(self.intermediate, dim=-1)
        return projections.down(F.silu(gate) * up)
