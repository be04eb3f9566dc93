"""Rotary position arithmetic for keys that are already stored rotated.

Rotating a stored key by `delta` moves it from position p to p + delta; only relative
distances enter the attention score, so that is all a position shift needs.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] along the last dim, written into one new tensor."""
    half = x.shape[-1] // 2
    out = torch.empty_like(x)
    torch.neg(x[..., half:], out=out[..., :half])
    out[..., half:] = x[..., :half]
    return out


def rotation_tables(
    positions: torch.Tensor, inv_freq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin for rotating by `positions`.

    positions: [n] (int or float, relative to the cache's base, so small)
    inv_freq: [..., D/2] fp32 (one row per layer where the layers' bases differ)
    returns cos, sin: [..., n, D] fp32
    """
    angles = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[..., None, :]
    # The D/2 frequencies twice along the last dim, as the model lays them out.
    angles = angles.repeat(*([1] * (angles.dim() - 1)), 2)
    return angles.cos(), angles.sin()


# Hugging Face's "rotate half" convention, as Llama-family models use it:
# x' = x * cos(p * f) + rotate_half(x) * sin(p * f), with cos/sin of width D made of the D/2
# frequencies f repeated twice. No attention factor of scaled RoPE variants (YaRN): the model
# applies it once, and a shift must preserve key norms.
def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., n, D] by per-row tables cos/sin [n, D]; computed in fp32."""
    x32 = x.to(torch.float32)
    return x32 * cos + rotate_half(x32) * sin


def shift_keys(keys: list[torch.Tensor], shift: int, inv_freq: torch.Tensor) -> None:
    """Move stored keys `shift` positions, in place: keys[layer] [1, kv_heads, n, D] (views of
    the cache), inv_freq [layers, D/2]. One layer at a time bounds the fp32 temporary."""
    by = torch.full((1,), shift, dtype=torch.int64, device=inv_freq.device)
    cos_all, sin_all = rotation_tables(by, inv_freq)  # [layers, 1, D]
    for layer, layer_keys in enumerate(keys):
        layer_keys.copy_(rotate(layer_keys, cos_all[layer], sin_all[layer]))
