"""Slot and position arithmetic of the sink + window cache. Pure Python, no torch.

Per layer, `P + R + S` slots: [ pinned 0..P-1 | ring P..P+R-1 | scratch P+R.. ]. Stream token
t lives in ring slot P + (t mod R); R >= W + C keeps a chunk from overwriting what its own
queries still see (worked example: DESIGN.md, "The cache").
"""

from __future__ import annotations

from dataclasses import dataclass, replace


class LayoutError(ValueError):
    """A cache shape that cannot work; the message names the value and the fix."""


@dataclass(frozen=True)
class KVShape:
    layers: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class CacheLayout:
    pinned: int  # P: attention-sink slots, the session's first tokens
    window: int  # W: stream tokens a query can see
    chunk: int  # C: most stream tokens one forward pass writes
    scratch: int  # S: summary slots (instruction + generated tokens)
    ring: int  # R: ring slots allocated, >= W + C

    @classmethod
    def build(cls, *, pinned: int, window: int, chunk: int, scratch: int) -> CacheLayout:
        layout = cls(
            pinned=pinned, window=window, chunk=chunk, scratch=scratch, ring=window + chunk
        )
        layout.check_shape()
        return layout

    @property
    def max_capacity(self) -> int:
        """Tokens any query can see: pinned + window (the user-facing knob)."""
        return self.pinned + self.window

    @property
    def slots(self) -> int:
        return self.pinned + self.ring + self.scratch

    @property
    def ring_start(self) -> int:
        return self.pinned

    @property
    def scratch_start(self) -> int:
        return self.pinned + self.ring

    def check_shape(self) -> None:
        if self.pinned < 0:
            raise LayoutError(f"pinned = {self.pinned}: must be >= 0")
        if self.window < 1:
            raise LayoutError(f"window = {self.window}: must be >= 1 (raise max_capacity)")
        if self.chunk < 1:
            raise LayoutError(f"chunk = {self.chunk}: must be >= 1")
        if self.scratch < 0:
            raise LayoutError(f"scratch = {self.scratch}: must be >= 0")
        if self.ring < self.window + self.chunk:
            raise LayoutError(
                f"ring = {self.ring}: must be >= window + chunk = {self.window + self.chunk}, "
                "or a chunk would overwrite tokens its own queries still see"
            )

    def longest_distance(self) -> int:
        """Largest query-to-key distance any forward can produce (see DESIGN.md, Positions)."""
        return self.pinned + self.window + max(self.chunk, self.scratch)

    def check_positions(self, max_positions: int) -> None:
        """P + W + max(C, S) must stay inside the model's trained context."""
        need = self.longest_distance()
        if need > max_positions:
            raise LayoutError(
                f"pinned {self.pinned} + window {self.window} + max(chunk {self.chunk}, "
                f"summary slots {self.scratch}) = {need} exceeds the model's trained context "
                f"of {max_positions} positions: {self._ways_to_fit(max_positions)}"
            )

    def _ways_to_fit(self, max_positions: int) -> str:
        """The settings that would fit, each on its own (only those that can)."""
        ways = []
        largest_capacity = max_positions - max(self.chunk, self.scratch)
        if largest_capacity > self.pinned:
            ways.append(f"lower max_capacity to at most {largest_capacity}")
        largest_chunk = max_positions - self.pinned - self.window
        if self.chunk > self.scratch and largest_chunk >= max(1, self.scratch):
            ways.append(f"use a chunk of at most {largest_chunk}")
        if self.scratch >= self.chunk:
            ways.append("write shorter summaries (summary.max_tokens)")
        return " or ".join(ways) or "use a smaller max_capacity and chunk"

    def with_window(self, window: int) -> CacheLayout:
        """The layout after a live resize: same ring when it still fits, else a new ring."""
        ring = self.ring if window + self.chunk <= self.ring else window + self.chunk
        layout = replace(self, window=window, ring=ring)
        layout.check_shape()
        return layout

    def ring_slot(self, position: int) -> int:
        return self.pinned + position % self.ring


def sink_anchor(layout: CacheLayout, stream_start: int, first_query: int) -> int:
    """Position of the oldest window token that `first_query` sees.

    The pinned keys are placed just before it (pinned i at anchor - P + i), so
    the distance to the sinks never grows with the stream. At the start of a
    stream the anchor is `stream_start` and the sinks sit at their true
    positions.
    """
    return max(stream_start, first_query - layout.window + 1)


# Refresh "auto": twice per window length streamed (measured, H100 fp32, a transcript:
# sinks/recompute 1.016-1.018 -> 1.009-1.011 at 1024, 1.006-1.016 -> 1.000-1.005 at 256;
# docs/eval/refresh/). It costs W tokens of forward per refresh, about 3x the ingest compute:
# spare on a GPU, so always there; on a CPU only up to this max_capacity, where the gap is
# largest and the window small.
REFRESH_CPU_UP_TO = 512
REFRESH_CHOICES = "'auto', 'off' or a number of stream tokens"


def refresh_every(setting: str, layout: CacheLayout, gpu: bool) -> int:
    """Stream tokens between two refreshes of the window (0: never) for a setting: 'off',
    a number of tokens, or 'auto' (half the window; on a CPU only where max_capacity <=
    REFRESH_CPU_UP_TO)."""
    every = parse_refresh(setting)
    if every is not None:
        return every
    if not gpu and layout.max_capacity > REFRESH_CPU_UP_TO:
        return 0
    return max(1, layout.window // 2)


def parse_refresh(setting: str) -> int | None:
    """A refresh setting's tokens: 0 for 'off', None for 'auto'; LayoutError otherwise."""
    if setting in ("off", "auto"):
        return 0 if setting == "off" else None
    if not setting.isdigit() or int(setting) < 1:
        raise LayoutError(f"refresh = {setting!r}: must be {REFRESH_CHOICES}")
    return int(setting)


def refresh_floor(
    layout: CacheLayout, counters: StreamCounters, refreshed_at: int, every: int
) -> int | None:
    """Where a refresh of the window starts, if one is due before the token at the head:
    the oldest position that token sees. Due once `every` stream tokens came since the last
    (at head `refreshed_at`) and anything was evicted (until then each key saw exactly what
    it still sees). None: not due; every <= 0: never."""
    floor = max(counters.head - layout.window + 1, counters.kept_from)
    if every <= 0 or floor <= counters.stream_start:
        return None
    return floor if counters.head - refreshed_at >= every else None


def pinned_positions(layout: CacheLayout, stream_start: int, first_query: int) -> list[int]:
    anchor = sink_anchor(layout, stream_start, first_query)
    return [anchor - layout.pinned + i for i in range(layout.pinned)]


def visible_ring_positions(layout: CacheLayout, kept_from: int, query: int) -> range:
    """Stream positions a query at `query` sees: t - W < p <= t, and not before `kept_from`."""
    return range(max(kept_from, query - layout.window + 1), query + 1)


@dataclass(frozen=True)
class StreamCounters:
    """Host-side counters of one stream, derived from positions alone."""

    stream_start: int  # absolute position of the first stream token (after the pinned prefix)
    head: int  # absolute position the next stream token will take
    kept_from: int  # oldest stream position still physically held (after a resize copy)

    @property
    def seen(self) -> int:
        return self.head - self.stream_start

    def window_start(self, layout: CacheLayout) -> int:
        return max(self.stream_start, self.head - layout.window, self.kept_from)

    def visible(self, layout: CacheLayout) -> int:
        return self.head - self.window_start(layout)

    def evicted(self, layout: CacheLayout) -> int:
        return self.window_start(layout) - self.stream_start
