"""Low-bit copies of a model's projections, for the decode step on a CPU.

Why: a CPU decodes a token at the speed it reads the weights. The default model's bf16
projections are 212 MB a token (24 ms on this project's 2-core machine), int4 in groups
of 32 are 66 MB (5.7 ms). Ingest keeps the model's own bf16 weights: at 256 tokens a
chunk oneDNN's bf16 matmul is ~8x faster than the int4 kernel (DESIGN.md, "Decoding on a
CPU"). The kernels are torch's own: `aten._weight_int4pack_mm_for_cpu` (groups of int4
with a scale and a zero each) and `aten._weight_int8pack_mm` (int8, a scale per row).

The default model's GGUF stores its projections as Q4_1: blocks of 32 values along the
input, each value d * q + m with q in 0..15. Groups of 32 with a scale and a zero are the
same form, so quantizing the dequantized values again lands on the GGUF's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

INT4_GROUP = 32  # the input values that share a scale and a zero (Q4_1's block)
INT4_ROWS_MULTIPLE = 16  # the int4 kernel's layout packs output rows in tiles of 16
INT8_MAX = 127


class Projection(Protocol):
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in] -> [..., out]"""
        ...


@dataclass(frozen=True)
class Dense:
    """The model's own weight (a view: no copy)."""

    weight: torch.Tensor  # [out, in]
    bias: torch.Tensor | None = None  # [out]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass(frozen=True)
class Int8Rows:
    """int8 values, one scale per output row (symmetric)."""

    values: torch.Tensor  # [out, in] int8
    scale: torch.Tensor  # [out], the activations' dtype
    bias: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.aten._weight_int8pack_mm(flat, self.values, self.scale)
        return _with_bias(out.view(*x.shape[:-1], -1), self.bias)


@dataclass(frozen=True)
class Int4Groups:
    """int4 values in groups of INT4_GROUP inputs, each group with a scale and a zero:
    w = (q - 8) * scale + zero, packed in the CPU kernel's own layout."""

    packed: torch.Tensor  # [out, in / 2] uint8
    scale_zero: torch.Tensor  # [in / group, out, 2], the activations' dtype
    bias: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            flat, self.packed, INT4_GROUP, self.scale_zero
        )
        return _with_bias(out.view(*x.shape[:-1], -1), self.bias)


def _with_bias(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return out if bias is None else out + bias


def int8_rows(weight: torch.Tensor, bias: torch.Tensor | None = None) -> Int8Rows:
    """weight [out, in] -> each row rounded to the nearest of 255 steps of its range."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / INT8_MAX
    values = torch.round(w / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return Int8Rows(values, scale.to(weight.dtype), bias)


def int4_fits(weight: torch.Tensor) -> bool:
    rows, columns = weight.shape
    return rows % INT4_ROWS_MULTIPLE == 0 and columns % INT4_GROUP == 0


def int4_groups(weight: torch.Tensor, bias: torch.Tensor | None = None) -> Int4Groups:
    """weight [out, in] -> each group of INT4_GROUP inputs mapped onto 16 steps between its
    minimum and maximum (asymmetric). Needs int4_fits(weight)."""
    rows, columns = weight.shape
    groups = weight.detach().float().reshape(rows, columns // INT4_GROUP, INT4_GROUP)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # [out, in / group]
    scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round((groups - low[..., None]) / scale[..., None]).clamp_(0, 15)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        q.reshape(rows, columns).to(torch.int32), 1
    )
    zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
    scale_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
    return Int4Groups(packed, scale_zero.to(weight.dtype), bias)


def lowbit(weight: torch.Tensor, bias: torch.Tensor | None = None) -> Projection:
    """The smallest copy the CPU kernels take: int4 groups where the shape allows, else
    int8 rows."""
    return int4_groups(weight, bias) if int4_fits(weight) else int8_rows(weight, bias)


def lowbit_unsupported(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why low-bit decode weights cannot be used here, or None."""
    if device.type != "cpu":
        return f"low-bit decode weights are a CPU path (device {device})"
    if dtype != torch.bfloat16:
        return f"low-bit decode weights need bf16 activations (the model is {dtype})"
    return None
