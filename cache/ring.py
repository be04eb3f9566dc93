"""The pinned + ring KV cache: tensors allocated once, written in place.

Each forward is planned (`plan_prefix` / `plan_stream` / `plan_scratch`, cache/plan.py),
the model writes each layer through `write`, and `finish` commits. Positions are kept
relative to `base`: RoPE angles of raw positions near 10^8 lose all precision in fp32."""

from __future__ import annotations

import enum

import torch

from .layout import CacheLayout, KVShape, LayoutError, StreamCounters, sink_anchor
from .pinned import PinnedKeys
from .plan import ChunkInputs, DecodeInputs, ForwardPlan, PlanKind
from .rope import shift_keys

EMPTY = -(2**62)  # slot position of an empty slot: fails every `p > t - W` test


class SinkMode(enum.Enum):
    REROTATE = "rerotate"  # streamd: sinks placed just before the visible window
    FIXED = "fixed"  # sinks left at their original positions (the known failure)


class StreamCache:
    """Sink + window KV cache over all layers of one model."""

    def __init__(
        self,
        layout: CacheLayout,
        shape: KVShape,
        *,
        inv_freq: torch.Tensor,  # [D/2], or [layers, D/2] where the layers' bases differ
        dtype: torch.dtype,
        device: torch.device | str,
        origin: int = 0,
        rebase_threshold: int = 2**15,
        sink_mode: SinkMode = SinkMode.REROTATE,
        sliding_window: int | None = None,  # of the model's sliding layers, if it has any
    ) -> None:
        if rebase_threshold < 1:
            raise LayoutError(f"rebase_threshold = {rebase_threshold}: must be >= 1")
        self.layout = layout
        self.shape = shape
        self.dtype = dtype
        self.device = torch.device(device)
        freqs = inv_freq.to(device=self.device, dtype=torch.float32)
        self.inv_freq = freqs.expand(shape.layers, -1) if freqs.dim() == 1 else freqs
        self.sliding_window = sliding_window
        self.sink_mode = sink_mode
        self.rebase_threshold = rebase_threshold
        self.origin = origin
        self.base = origin  # positions handed to the model are `position - base`
        self.head = origin  # absolute position of the next token
        self.kept_from = origin + layout.pinned
        self.refreshed_at = self.kept_from  # the head at the last refresh of the window
        self.scratch_used = 0
        self.fence: int | None = None  # set during a summary: the stream head it sees
        self.pinned = PinnedKeys(shape, layout.pinned, self.inv_freq)
        self._plan: ForwardPlan | None = None
        self.generation = 0  # bumped whenever the cache tensors are reallocated
        self._allocate(layout)

    # ---------------------------------------------------------------- allocation

    def _allocate(self, layout: CacheLayout) -> None:
        s, dev = self.shape, self.device
        # One tensor per layer, not views of one: a compiled decode step that
        # writes a view of a shared tensor copies the whole shared tensor back.
        kv = (1, s.kv_heads, layout.slots, s.head_dim)
        self.keys = [torch.zeros(kv, dtype=self.dtype, device=dev) for _ in range(s.layers)]
        self.values = [torch.zeros(kv, dtype=self.dtype, device=dev) for _ in range(s.layers)]
        self.slot_pos = torch.full((layout.slots,), EMPTY, dtype=torch.int64, device=dev)
        self.slot_ids = torch.zeros(layout.slots, dtype=torch.int64, device=dev)  # token ids
        self._stale = torch.empty(layout.ring, dtype=torch.bool, device=dev)
        self.always_visible = torch.zeros(layout.slots, dtype=torch.bool, device=dev)
        if self.pinned_done:
            self.always_visible[: layout.pinned] = True
        most = max(layout.pinned, layout.chunk, layout.scratch, 1)
        self._inputs = ChunkInputs(most, layout.slots, dev, self.sliding_window)
        self._decode = DecodeInputs(layout.slots, dev, self.sliding_window)
        self.generation += 1  # anything captured over the old tensors must be captured again

    @property
    def pinned_done(self) -> bool:
        return self.head > self.origin or self.layout.pinned == 0

    @property
    def stream_start(self) -> int:
        return self.origin + self.layout.pinned

    def counters(self) -> StreamCounters:
        return StreamCounters(self.stream_start, self.head, self.kept_from)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the cache state (for snapshots, rollback and no-reallocation checks)."""
        return {
            **{f"keys.{layer}": t for layer, t in enumerate(self.keys)},
            **{f"values.{layer}": t for layer, t in enumerate(self.values)},
            "slot_pos": self.slot_pos,
            "slot_ids": self.slot_ids,
            "always_visible": self.always_visible,
            "pristine": self.pinned.pristine,
        }

    # -------------------------------------------------------------- planning

    def plan_prefix(self, count: int) -> ForwardPlan:
        """The session's first tokens, which become the pinned slots."""
        if self.pinned_done:
            raise RuntimeError("the pinned prefix is already filled")
        if count != self.layout.pinned:
            raise LayoutError(f"prefix of {count} tokens for {self.layout.pinned} pinned slots")
        positions = self._inputs.positions(self.origin, count)
        slots = self._inputs.slots(count)
        slots.copy_(self._inputs.arange[:count])
        return self._finish_plan(PlanKind.PREFIX, self.origin, count, positions, slots)

    def plan_stream(self, count: int) -> ForwardPlan:
        """`count` <= C stream tokens at the head, into the ring."""
        if not self.pinned_done:
            raise RuntimeError("prefill the pinned prefix first")
        if not 1 <= count <= self.layout.chunk:
            raise LayoutError(f"stream chunk of {count} tokens: must be 1..{self.layout.chunk}")
        if self.fence is not None:
            raise RuntimeError("a summary is in progress: end_scratch() first")
        self._maybe_rebase(self.head, self.head + count)
        positions, slots = self._ring_slots(self.head, count)
        anchor = self._anchor_for(self.head)
        self._place_pinned(anchor)
        self.pinned.stream_anchor = anchor
        return self._finish_plan(PlanKind.STREAM, self.head, count, positions, slots)

    def _ring_slots(self, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions first.. and their ring slots, [count] int64 each (static buffers)."""
        positions = self._inputs.positions(first, count)
        slots = self._inputs.slots(count)
        torch.remainder(positions, self.layout.ring, out=slots)
        return positions, slots.add_(self.layout.ring_start)

    def keep_ids(self, plan: ForwardPlan, input_ids: torch.Tensor) -> None:
        """Remember the token ids [1, count] a prefix or stream plan writes, slot by slot:
        a refresh recomputes the window from them."""
        self.slot_ids.index_copy_(0, plan.write_slots, input_ids[0])

    def plan_refresh(self, first: int, count: int, floor: int) -> ForwardPlan:
        """`count` <= C held positions from `first` recomputed in their own slots, each query
        seeing the pinned keys (where the next stream chunk puts them: just before `floor`
        unless a resize grew the window past what is held) and positions floor..itself, as
        a fresh forward over them would (the oracle: a key computed while streaming saw
        tokens since evicted). Positions below the floor may be recomputed too (a full-size
        piece for a captured graph): they see the pinned keys only; finish_refresh() hides them."""
        held = self.head - self.layout.ring <= first and first + count <= self.head
        if not (held and 1 <= count <= self.layout.chunk and self.fence is None):
            raise LayoutError(f"refresh of {first}..{first + count - 1}: not held, or in a summary")
        positions, slots = self._ring_slots(first, count)
        self._place_pinned(self._anchor_for(self.head))
        return self._finish_plan(PlanKind.REFRESH, first, count, positions, slots, floor)

    def finish_refresh(self, floor: int) -> None:
        """After the refresh forwards: nothing older than `floor` stays visible."""
        ring_pos = self.slot_pos[self.layout.ring_start : self.layout.scratch_start]
        torch.lt(ring_pos, floor, out=self._stale)
        ring_pos.masked_fill_(self._stale, EMPTY)
        self.kept_from = max(self.kept_from, floor)
        self.refreshed_at = self.head

    def begin_scratch(self) -> None:
        """Start a summary: its tokens go after the stream head, into scratch slots."""
        if not self.pinned_done:
            raise RuntimeError("prefill the pinned prefix first")
        self.fence = self.head
        self.scratch_used = 0

    def plan_scratch(self, count: int) -> ForwardPlan:
        if self.fence is None:
            raise RuntimeError("begin_scratch() first")
        if not 1 <= count <= self.layout.scratch - self.scratch_used:
            raise LayoutError(
                f"summary step of {count} tokens with {self.layout.scratch - self.scratch_used} "
                f"of {self.layout.scratch} summary slots left"
            )
        first = self.fence + self.scratch_used
        positions = self._inputs.positions(first, count)
        slots = self._inputs.slots(count)
        torch.add(
            self._inputs.arange[:count], self.layout.scratch_start + self.scratch_used, out=slots
        )
        self._place_pinned(self._anchor_for(self.fence))
        return self._finish_plan(PlanKind.SCRATCH, first, count, positions, slots)

    def arm_decode(self) -> ForwardPlan:
        """Fill the static one-token inputs for the next summary token.

        After this, each decode step is device-only: `refresh_decode()` before
        the forward, `advance_decode()` after; a CUDA graph can replay both.
        """
        if self.fence is None:
            raise RuntimeError("begin_scratch() first")
        if self.scratch_used >= self.layout.scratch:
            raise LayoutError(f"all {self.layout.scratch} summary slots are used")
        self._place_pinned(self._anchor_for(self.fence))
        self._decode.arm(
            position=self.fence + self.scratch_used,
            slot=self.layout.scratch_start + self.scratch_used,
            lower=self.fence - self.layout.window,
            base=self.base,
        )
        self._plan = self._decode.plan
        return self._decode.plan

    @property
    def decode_plan(self) -> ForwardPlan:
        """The static one-token plan that arm_decode() fills."""
        return self._decode.plan

    def decode_steps_left(self) -> int:
        return self.layout.scratch - self.scratch_used

    def refresh_decode(self) -> None:
        """Device-only: the static token's slot position, mask and position id."""
        self._decode.refresh(self.slot_pos, self.always_visible)

    def advance_decode(self) -> None:
        """Device-only: the next decode step writes the next scratch slot."""
        self._decode.advance()

    def finish_decode(self, steps: int) -> None:
        """Host bookkeeping after `steps` device-side decode steps."""
        self.scratch_used += steps
        self._plan = None

    def rewind_scratch(self, used: int) -> None:
        """Keep only the first `used` summary slots: a guided summary forgets what the
        model wrote past a sentence end before it writes the next words itself.
        The dropped slots become empty (invisible); end_scratch() zeroes them later."""
        if self.fence is None:
            raise RuntimeError("begin_scratch() first")
        if self._plan is not None:
            raise RuntimeError("rewind between forwards, not during one")
        if not 0 <= used <= self.scratch_used:
            raise LayoutError(f"rewind to {used} of {self.scratch_used} summary slots used")
        start = self.layout.scratch_start
        # Every slot from `used` on, not only up to scratch_used: a slot past scratch_used
        # may hold a position nobody counted (the decode graph's warm-up steps write the
        # slot at scratch_used; an abandoned plan its slots), which a later query would see.
        self.slot_pos[start + used :].fill_(EMPTY)
        self.scratch_used = used

    def end_scratch(self) -> None:
        """Forget the summary: the cache returns bit-identical to before begin_scratch()."""
        start = self.layout.scratch_start
        self.slot_pos[start:].fill_(EMPTY)
        for tensor in (*self.keys, *self.values):
            tensor[:, :, start:].zero_()
        self._place_pinned(self.pinned.stream_anchor or self.stream_start)  # 0 is the start
        self.fence = None
        self.scratch_used = 0
        self._plan = None

    def _finish_plan(
        self,
        kind: PlanKind,
        first: int,
        count: int,
        positions: torch.Tensor,
        slots: torch.Tensor,
        floor: int | None = None,
    ) -> ForwardPlan:
        # New tokens' positions go in before the mask: a chunk sees itself causally.
        self.slot_pos.index_copy_(0, slots, positions)
        inputs, window = self._inputs, self.layout.window
        mask = inputs.mask(positions, self.slot_pos, self.always_visible, self.fence, window, floor)
        local = self._inputs.local_mask(mask, positions, self.slot_pos)
        shape = (1, 1, count, self.layout.slots)
        plan = ForwardPlan(
            kind=kind,
            first=first,
            count=count,
            position_ids=self._inputs.relative_positions(positions, self.base),
            mask=mask.view(shape),
            write_slots=slots,
            local_mask=None if local is None else local.view(shape),
        )
        self._plan = plan
        return plan

    # ------------------------------------------------------------ pinned keys

    def _anchor_for(self, first_query: int) -> int:
        if self.sink_mode is SinkMode.FIXED:
            return self.stream_start
        return sink_anchor(self.layout, self.stream_start, first_query)

    def _place_pinned(self, anchor: int) -> None:
        """The pinned keys at anchor - P .. anchor - 1."""
        self.pinned.place(anchor, self.base, self.keys, self.slot_pos)

    # -------------------------------------------------------------- rebasing

    def _maybe_rebase(self, first: int, end: int) -> None:
        """Shift the base to `first` once positions run past the threshold: every ring key
        rotated by -shift once; pinned keys re-placed from the pristine copy (no drift)."""
        if end - self.base <= self.rebase_threshold:
            return
        ring = slice(self.layout.ring_start, self.layout.scratch_start)
        shift_keys([keys[:, :, ring] for keys in self.keys], self.base - first, self.inv_freq)
        self.base = first
        self.pinned.anchor = None

    # --------------------------------------------------------------- writing

    def write(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's new keys/values in the planned slots.

        keys, values: [1, kv_heads, count, head_dim], keys already rotated by the model
        returns this layer's whole cache: [1, kv_heads, slots, head_dim] each
        """
        plan = self._plan
        if plan is None:
            raise RuntimeError("write() outside a planned forward")
        layer_keys, layer_values = self.keys[layer], self.values[layer]
        layer_keys.index_copy_(2, plan.write_slots, keys.to(self.dtype))
        layer_values.index_copy_(2, plan.write_slots, values.to(self.dtype))
        if plan.kind is PlanKind.PREFIX:
            self.pinned.keep(layer, keys, plan.position_ids[0])
        return layer_keys, layer_values

    def finish(self) -> None:
        """Commit the planned forward: the head (or the summary) moves on."""
        plan = self._plan
        if plan is None:
            raise RuntimeError("finish() without a planned forward")
        if plan.kind is PlanKind.PREFIX:
            self.always_visible[: self.layout.pinned] = True
            self.head = self.origin + plan.count
            self.pinned.anchor = self.pinned.stream_anchor = self.stream_start
        elif plan.kind is PlanKind.STREAM:
            self.head += plan.count
        elif plan.kind is PlanKind.SCRATCH:
            self.scratch_used += plan.count
        self._plan = None

    def abandon(self) -> None:
        """Forget a planned forward that failed. Its slots may hold some layers' new keys,
        but the head did not move: their positions are ahead of every query until the
        next plan over the same positions overwrites them."""
        self._plan = None

    def reset(self, origin: int | None = None) -> None:
        """Back to an empty session at `origin` (by default the one it had), same tensors,
        so captured graphs stay valid. A resumed stream restarts at its old positions."""
        if self._plan is not None or self.fence is not None:
            raise RuntimeError("reset between forwards, not during one")
        if origin is not None:
            self.origin = origin
        self.slot_pos.fill_(EMPTY)
        self.slot_ids.zero_()
        self.always_visible.zero_()
        for tensor in (*self.keys, *self.values):
            tensor.zero_()
        self.pinned.reset()
        self.base = self.head = self.origin
        self.kept_from = self.refreshed_at = self.stream_start

    # --------------------------------------------------------------- resizing

    def set_window(self, window: int) -> None:
        """Live resize between two forwards: a mask change, or one reallocation + copy."""
        if self._plan is not None or self.fence is not None:
            raise RuntimeError("resize between forwards, not during one")
        new = self.layout.with_window(window)
        if new.ring == self.layout.ring:
            self.layout = new
            return
        self._reallocate(new)

    def _reallocate(self, new: CacheLayout) -> None:
        old_layout, counters = self.layout, self.counters()
        live = torch.arange(counters.window_start(old_layout), self.head, device=self.device)
        old_slots = live % old_layout.ring + old_layout.ring_start
        new_slots = live % new.ring + new.ring_start
        old, pinned = self._per_slot(), old_layout.pinned
        self._allocate(new)
        for (new_t, dim), (old_t, _) in zip(self._per_slot(), old, strict=True):
            new_t.narrow(dim, 0, pinned).copy_(old_t.narrow(dim, 0, pinned))
            new_t.index_copy_(dim, new_slots, old_t.index_select(dim, old_slots))
        self.kept_from = counters.window_start(old_layout)
        self.layout = new

    def _per_slot(self) -> list[tuple[torch.Tensor, int]]:
        """Every tensor indexed by slot, with the dim its slots run along."""
        kv = [(t, 2) for t in (*self.keys, *self.values)]
        return [*kv, (self.slot_pos, 0), (self.slot_ids, 0)]
