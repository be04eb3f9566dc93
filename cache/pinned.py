"""The pinned prefix's keys: kept once without their rotation, placed where the window needs them.

Every placement rotates from the pristine fp32 copy: rotating stored keys again and again
in place accumulates rounding (a cause of the bugs that got Hugging Face's SinkCache removed).
"""

from __future__ import annotations

import torch

from .layout import KVShape
from .rope import rotate, rotation_tables


class PinnedKeys:
    """The pristine copy of P pinned keys per layer, and where they sit now."""

    def __init__(self, shape: KVShape, count: int, inv_freq: torch.Tensor) -> None:
        """inv_freq: [layers, D/2] fp32, on the cache's device."""
        self.count = count
        self.inv_freq = inv_freq
        size = (shape.layers, 1, shape.kv_heads, count, shape.head_dim)
        self.pristine = torch.zeros(size, dtype=torch.float32, device=inv_freq.device)
        self._arange = torch.arange(count, dtype=torch.int64, device=inv_freq.device)
        self.anchor: int | None = None  # where they sit now; None: must be placed again
        self.stream_anchor: int | None = None  # where the last stream chunk put them

    def keep(self, layer: int, keys: torch.Tensor, position_ids: torch.Tensor) -> None:
        """keys [1, kv_heads, P, D] as the model rotated them to position_ids [P] (relative to
        the base): the model's rotation undone once, in fp32."""
        cos, sin = rotation_tables(-position_ids, self.inv_freq[layer])
        self.pristine[layer] = rotate(keys, cos, sin)

    def place(
        self, anchor: int, base: int, keys: list[torch.Tensor], slot_pos: torch.Tensor
    ) -> None:
        """Rotate the pristine keys to sit at anchor - P .. anchor - 1 (absolute positions) in
        the first P slots of each layer's keys [1, kv_heads, slots, D]; slot_pos [slots] too."""
        if self.count == 0 or anchor == self.anchor:
            return
        virtual = self._arange + (anchor - self.count)
        cos, sin = rotation_tables(virtual - base, self.inv_freq)  # [layers, P, D]
        placed = rotate(self.pristine, cos[:, None, None], sin[:, None, None])
        for layer, layer_keys in enumerate(keys):
            layer_keys[:, :, : self.count] = placed[layer].to(layer_keys.dtype)
        slot_pos[: self.count] = virtual
        self.anchor = anchor

    def reset(self) -> None:
        self.pristine.zero_()
        self.anchor = self.stream_anchor = None
