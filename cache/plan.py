"""What one forward pass over the cache is handed: position ids, slots and the mask.

The StreamCache (cache/ring.py) builds each plan in static buffers (ChunkInputs), so a
captured CUDA graph finds its inputs at the same addresses; DecodeInputs is the
one-token plan that a decode step advances on the device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch


class PlanKind(enum.Enum):
    PREFIX = "prefix"
    STREAM = "stream"
    SCRATCH = "scratch"
    REFRESH = "refresh"  # window tokens recomputed in their own slots; the head stays


@dataclass(frozen=True)
class ForwardPlan:
    """Inputs for one forward pass over `count` new tokens starting at `first`."""

    kind: PlanKind
    first: int  # absolute position of the first new token
    count: int
    position_ids: torch.Tensor  # [1, count] int64, relative to the cache base
    mask: torch.Tensor  # [1, 1, count, slots] bool, True = may attend
    write_slots: torch.Tensor  # [count] int64, slot of each new token
    # The mask of a sliding layer (also key position > query position - its window);
    # None where the model has no sliding layers.
    local_mask: torch.Tensor | None = None

    def layer_mask(self, sliding: bool) -> torch.Tensor:
        return self.local_mask if sliding and self.local_mask is not None else self.mask


def narrow_to_window(
    mask: torch.Tensor,
    slot_pos: torch.Tensor,
    positions: torch.Tensor,
    sliding_window: int,
    local: torch.Tensor,
    lower: torch.Tensor,
) -> torch.Tensor:
    """local[q, s] = mask[q, s] and slot_pos[s] > positions[q] - sliding_window.

    mask, local: [n, slots] bool (local written in place); slot_pos: [slots];
    positions, lower: [n] (lower is scratch); returns local.
    """
    torch.sub(positions, sliding_window, out=lower)
    torch.gt(slot_pos.unsqueeze(0), lower.unsqueeze(1), out=local)
    return local.logical_and_(mask)


def mask_into(
    slot_pos: torch.Tensor,
    always_visible: torch.Tensor,
    positions: torch.Tensor,
    lower: torch.Tensor,
    mask: torch.Tensor,
    recent: torch.Tensor,
) -> torch.Tensor:
    """Device-only mask arithmetic: mask[q, s] = slot_pos[s] <= positions[q] and
    (always_visible[s] or slot_pos[s] > lower[q]).

    slot_pos: [slots] int64; always_visible: [slots] bool; positions, lower: [n];
    mask, recent: [n, slots] bool, written in place; returns mask.
    """
    slot_pos = slot_pos.unsqueeze(0)
    torch.le(slot_pos, positions.unsqueeze(1), out=mask)
    torch.gt(slot_pos, lower.unsqueeze(1), out=recent)
    recent.logical_or_(always_visible.unsqueeze(0))
    mask.logical_and_(recent)
    return mask


class ChunkInputs:
    """Static buffers for the plan of a forward over up to `most` new tokens
    (the pinned prefix, a stream chunk or a summary step)."""

    def __init__(
        self, most: int, slots: int, dev: torch.device, sliding_window: int | None = None
    ) -> None:
        self.arange = torch.arange(most, dtype=torch.int64, device=dev)  # [most]: 0 .. most-1
        self._positions = torch.empty(most, dtype=torch.int64, device=dev)
        self._slots = torch.empty(most, dtype=torch.int64, device=dev)
        self._lower = torch.empty(most, dtype=torch.int64, device=dev)
        self._mask = torch.empty((most, slots), dtype=torch.bool, device=dev)
        self._mask_tmp = torch.empty((most, slots), dtype=torch.bool, device=dev)
        self._position_ids = torch.empty((1, most), dtype=torch.int64, device=dev)
        self.sliding_window = sliding_window
        self._local = torch.empty(
            (most, slots) if sliding_window else (0,), dtype=torch.bool, device=dev
        )

    def positions(self, first: int, count: int) -> torch.Tensor:
        """[count] int64: first .. first + count - 1."""
        positions = self._positions[:count]
        torch.add(self.arange[:count], first, out=positions)
        return positions

    def slots(self, count: int) -> torch.Tensor:
        """[count] int64, for the caller to fill with the new tokens' slots."""
        return self._slots[:count]

    def relative_positions(self, positions: torch.Tensor, base: int) -> torch.Tensor:
        """[1, count] position ids for the model, in a static buffer (CUDA-graph inputs)."""
        out = self._position_ids[:, : positions.shape[0]]
        torch.sub(positions, base, out=out[0])
        return out

    def mask(
        self,
        positions: torch.Tensor,
        slot_pos: torch.Tensor,
        always_visible: torch.Tensor,
        fence: int | None,
        window: int,
        floor: int | None = None,
    ) -> torch.Tensor:
        """mask[q, s] = slot s holds p <= t_q and (s is pinned or p > min(t_q, fence) - W),
        and p >= floor where one is given (a refresh sees nothing older than its window).

        positions: [count]; slot_pos, always_visible: [slots]; returns [count, slots] bool.
        """
        count = positions.shape[0]
        lower = self._lower[:count]
        if fence is None:
            lower.copy_(positions)
        else:
            torch.clamp(positions, max=fence, out=lower)
        lower.sub_(window)
        if floor is not None:
            lower.clamp_(min=floor - 1)
        mask, recent = self._mask[:count], self._mask_tmp[:count]
        return mask_into(slot_pos, always_visible, positions, lower, mask, recent)

    def local_mask(
        self, mask: torch.Tensor, positions: torch.Tensor, slot_pos: torch.Tensor
    ) -> torch.Tensor | None:
        """The sliding layers' mask beside `mask` [count, slots]; None without them."""
        if self.sliding_window is None:
            return None
        count = positions.shape[0]
        local, lower = self._local[:count], self._lower[:count]
        return narrow_to_window(mask, slot_pos, positions, self.sliding_window, local, lower)


class DecodeInputs:
    """Static one-token inputs: a decode step reads and advances them on the device,
    so a CUDA graph can replay it."""

    def __init__(self, slots: int, dev: torch.device, sliding_window: int | None = None) -> None:
        self._position = torch.zeros(1, dtype=torch.int64, device=dev)
        self._slot = torch.zeros(1, dtype=torch.int64, device=dev)
        self._lower = torch.zeros(1, dtype=torch.int64, device=dev)
        self._base = torch.zeros(1, dtype=torch.int64, device=dev)
        self._position_ids = torch.zeros((1, 1), dtype=torch.int64, device=dev)
        self._mask = torch.empty((1, slots), dtype=torch.bool, device=dev)
        self._mask_tmp = torch.empty((1, slots), dtype=torch.bool, device=dev)
        self.sliding_window = sliding_window
        self._local = torch.empty((1, slots), dtype=torch.bool, device=dev)
        self._local_lower = torch.zeros(1, dtype=torch.int64, device=dev)
        self.plan = ForwardPlan(
            kind=PlanKind.SCRATCH,
            first=-1,  # lives on the device, in _position
            count=1,
            position_ids=self._position_ids,
            mask=self._mask.view(1, 1, 1, slots),
            write_slots=self._slot,
            local_mask=self._local.view(1, 1, 1, slots) if sliding_window else None,
        )

    def arm(self, position: int, slot: int, lower: int, base: int) -> None:
        """Host side, once per run of steps: the next token's position and slot, the
        oldest position it may see (exclusive) and the cache base."""
        self._position.fill_(position)
        self._slot.fill_(slot)
        self._lower.fill_(lower)
        self._base.fill_(base)

    def refresh(self, slot_pos: torch.Tensor, always_visible: torch.Tensor) -> None:
        """Device-only: the static token's slot position, mask and position id.
        slot_pos: [slots] int64, always_visible: [slots] bool, the cache's own."""
        slot_pos.index_copy_(0, self._slot, self._position)
        mask, recent = self._mask, self._mask_tmp
        mask_into(slot_pos, always_visible, self._position, self._lower, mask, recent)
        if self.sliding_window is not None:
            window = self.sliding_window
            narrow_to_window(mask, slot_pos, self._position, window, self._local, self._local_lower)
        torch.sub(self._position, self._base, out=self._position_ids[0])

    def advance(self) -> None:
        """Device-only: the next decode step writes the next scratch slot."""
        self._position.add_(1)
        self._slot.add_(1)
