"""The one bridge between the ring cache and a Hugging Face model's own forward.

The model is driven through its public extension points only: a
`transformers.Cache` subclass receives each layer's new keys/values, our
boolean 4D mask is passed as `attention_mask` (transformers returns a 4D mask
as-is), and attention runs through a registered attention function. No
forward is copied or patched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, Cache

from .capture import allow_one_compile_per_capture, capture_stream, warm_up_or_unfused
from .families import check_supported, layer_inv_freq, layer_types, sliding_window
from .layout import CacheLayout, LayoutError, parse_refresh, refresh_every, refresh_floor
from .plan import ForwardPlan, PlanKind
from .ring import KVShape, SinkMode, StreamCache
from .single_query import single_query_attention

ATTENTION_NAME = "streamd_sdpa"


def streamd_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """Attention over all cache slots with the ring mask; GQA without repeating K/V.

    query: [1, heads, n, D]; key/value: [1, kv_heads, slots, D];
    attention_mask: [1, 1, n, slots] bool. Returns [1, n, heads, D].
    Called without a mask (a plain forward of the same model, no ring cache),
    it is ordinary causal attention.
    """
    if query.shape[2] == 1 and attention_mask is not None:
        return single_query_attention(query, key, value, attention_mask, scaling), None
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        is_causal=attention_mask is None and query.shape[2] > 1,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, streamd_sdpa)


def kv_shape(config: Any) -> KVShape:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return KVShape(layers=config.num_hidden_layers, kv_heads=kv_heads, head_dim=head_dim)


def max_positions(config: Any) -> int:
    return int(config.max_position_embeddings)


class HFRingCache(Cache):
    """A transformers Cache whose storage is a StreamCache."""

    is_compileable = False

    def __init__(self, ring: StreamCache) -> None:
        super().__init__(layers=[])
        self.ring = ring

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ring.write(layer_idx, key_states, value_states)

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.ring.head - self.ring.origin

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return self.ring.layout.slots


def cache_kwarg_name(model: torch.nn.Module) -> str:
    """transformers 5.2x renamed forward(past_key_values=) to forward(cache=)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def build_ring_cache(
    model: torch.nn.Module,
    layout: CacheLayout,
    *,
    origin: int = 0,
    rebase_threshold: int = 2**15,
    sink_mode: SinkMode = SinkMode.REROTATE,
    check_positions: bool = True,
) -> StreamCache:
    config = model.config
    check_supported(config)
    if check_positions:
        layout.check_positions(max_positions(config))
    param = next(model.parameters())
    return StreamCache(
        layout,
        kv_shape(config),
        inv_freq=layer_inv_freq(model),
        sliding_window=sliding_window(config),
        dtype=param.dtype,
        device=param.device,
        origin=origin,
        rebase_threshold=rebase_threshold,
        sink_mode=sink_mode,
    )


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    logits: torch.Tensor  # the graph's static output, [1, logits_to_keep, vocab]
    generation: int  # the ring's tensors it was captured over


def _graph_key(plan: ForwardPlan, keep: int) -> tuple[PlanKind, int, int]:
    # A refresh piece is a stream chunk's forward over other slots: the same capture serves.
    kind = PlanKind.STREAM if plan.kind is PlanKind.REFRESH else plan.kind
    return kind, plan.count, keep


class RingModel:
    """A Hugging Face causal LM driven over a StreamCache, one planned forward at a time.

    With `cuda_graphs`, full-size stream chunks and summary instructions are
    captured once per size and replayed: the plan already lives in static
    buffers, so a replay only copies the token ids in. A small model's eager
    forward is bound by Python launching ~1000 kernels, not by the GPU.
    """

    def __init__(
        self,
        model: Any,
        ring: StreamCache,
        *,
        cuda_graphs: bool = False,
        compile: bool = False,
        refresh: str = "off",
    ) -> None:
        """refresh: how often the window is recomputed from its own tokens: 'off', 'auto' or
        every so many stream tokens (cache/layout.py: refresh_every; `refresh`)."""
        check_supported(model.config)
        parse_refresh(refresh)  # a bad setting is refused here, not mid-stream
        self.refresh_setting = refresh
        self.refreshes = 0  # refreshes run so far
        self.model = model
        self.ring = ring
        self.hf_cache = HFRingCache(ring)
        self._cache_kwarg = cache_kwarg_name(model)
        self._layer_kinds = frozenset(layer_types(model.config))
        model.set_attn_implementation(ATTENTION_NAME)
        self.cuda_graphs = cuda_graphs and ring.device.type == "cuda"
        # Refresh pieces all of C tokens where a captured graph replays them.
        self.refresh_in_full_chunks = self.cuda_graphs
        self._graphs: dict[tuple[PlanKind, int, int], _Captured] = {}  # kind, count, kept
        # One memory pool for all of this runner's graphs (and its decoder's): they
        # replay one at a time on one stream and keep their outputs alive, so each
        # capture may reuse what the others freed. A private pool per graph would
        # reserve a 20 MiB segment or more for each captured size.
        self.graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        # What a capture records: with `compile`, the forward fused by torch.compile
        # (an eager 135M chunk spends ~40% of its time in small elementwise kernels).
        self._capturable: Callable[..., torch.Tensor] = self._eager
        if self.cuda_graphs and compile:
            allow_one_compile_per_capture()
            self._capturable = torch.compile(self._eager, dynamic=False)
        layout = ring.layout
        most = max(layout.chunk, layout.scratch, layout.pinned, 1)
        self._ids = torch.zeros((1, most), dtype=torch.int64, device=ring.device)

    @torch.inference_mode()
    def run(
        self,
        plan: ForwardPlan,
        input_ids: torch.Tensor,
        logits_to_keep: int = 1,
        graph: bool = True,
    ) -> torch.Tensor:
        """input_ids: [1, count] -> logits [1, logits_to_keep or count, vocab]; commits the plan.
        A forward that raises (CUDA out of memory) commits nothing: the ring stays as it was
        for the stream (see StreamCache.abandon). graph=False runs it eagerly: a size seen
        once should not cost a capture (and a compile)."""
        try:
            logits = self.forward(plan, input_ids, logits_to_keep, graph)
        except BaseException:
            self.ring.abandon()
            raise
        self.ring.finish()
        return logits

    def forward(
        self,
        plan: ForwardPlan,
        input_ids: torch.Tensor,
        logits_to_keep: int = 1,
        graph: bool = True,
    ) -> torch.Tensor:
        """The model's forward over a plan, uncommitted (decode steps replayed as a graph)."""
        if graph and self._graphable(plan, logits_to_keep):
            return self._replay(plan, input_ids, logits_to_keep)
        return self._eager(plan, input_ids, logits_to_keep)

    def _graphable(self, plan: ForwardPlan, logits_to_keep: int) -> bool:
        if not self.cuda_graphs or plan.first < 0:
            return False
        if logits_to_keep != 1:  # every position's logits: a padded summary step
            return plan.kind is PlanKind.SCRATCH and logits_to_keep == plan.count
        if plan.kind in (PlanKind.STREAM, PlanKind.REFRESH):
            return plan.count == self.ring.layout.chunk
        return plan.count > 1  # the pinned prefix, or a summary instruction

    def _replay(self, plan: ForwardPlan, input_ids: torch.Tensor, keep: int) -> torch.Tensor:
        ids = self._ids[:, : plan.count]
        ids.copy_(input_ids)
        entry = self._graphs.get(_graph_key(plan, keep))
        if entry is None or entry.generation != self.ring.generation:
            entry = self._capture(plan, ids, keep)
        entry.graph.replay()
        return entry.logits

    def _capture(self, plan: ForwardPlan, ids: torch.Tensor, keep: int) -> _Captured:
        # The warm-up is this very forward; the capture records it; the replay
        # that follows recomputes the same keys and values into the same slots.
        device = self.ring.device
        side = capture_stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self._warm_up(plan, ids, keep)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.graph_pool, stream=side):
            logits = self._capturable(plan, ids, keep)
        entry = _Captured(graph, logits, self.ring.generation)
        self._graphs[_graph_key(plan, keep)] = entry
        return entry

    def _warm_up(self, plan: ForwardPlan, ids: torch.Tensor, keep: int) -> None:
        self._capturable = warm_up_or_unfused(
            self._capturable, self._eager, lambda forward: forward(plan, ids, keep), "the prefill"
        )

    def _eager(
        self, plan: ForwardPlan, input_ids: torch.Tensor, logits_to_keep: int
    ) -> torch.Tensor:
        if input_ids.shape != (1, plan.count):
            raise LayoutError(
                f"input_ids of shape {tuple(input_ids.shape)} for a {plan.count}-plan"
            )
        out = self.model(
            input_ids=input_ids,
            position_ids=plan.position_ids,
            attention_mask=self._mask_argument(plan),
            use_cache=True,
            logits_to_keep=logits_to_keep,
            **{self._cache_kwarg: self.hf_cache},
        )
        return out.logits

    def _mask_argument(self, plan: ForwardPlan) -> torch.Tensor | dict[str, torch.Tensor]:
        """What the model's forward takes as attention_mask: our 4D mask, or one per layer
        type where it has sliding layers (transformers passes both through as they are)."""
        if plan.local_mask is None or "sliding_attention" not in self._layer_kinds:
            return plan.mask
        if "full_attention" not in self._layer_kinds:
            return plan.local_mask
        return {"full_attention": plan.mask, "sliding_attention": plan.local_mask}

    def prefix(self, input_ids: torch.Tensor, logits_to_keep: int = 1) -> torch.Tensor:
        plan = self.ring.plan_prefix(input_ids.shape[1])
        self.ring.keep_ids(plan, input_ids)
        return self.run(plan, input_ids, logits_to_keep)

    def ids(self, ids: list[int]) -> torch.Tensor:
        """Token ids as the model's input: [1, len(ids)] long, on the ring's device."""
        return torch.tensor([ids], dtype=torch.long, device=self.ring.device)

    def stream(self, input_ids: torch.Tensor, logits_to_keep: int = 1) -> torch.Tensor:
        """input_ids [1, count <= C] at the head -> logits [1, logits_to_keep or count, vocab];
        the window refreshed first when one is due."""
        ring = self.ring
        floor = refresh_floor(ring.layout, ring.counters(), ring.refreshed_at, self.refresh_every)
        if floor is not None:
            self.refresh(floor)
        plan = ring.plan_stream(input_ids.shape[1])
        ring.keep_ids(plan, input_ids)
        return self.run(plan, input_ids, logits_to_keep)

    @property
    def refresh_every(self) -> int:
        """Stream tokens between two refreshes now (0: never); a resize may change it."""
        gpu = self.ring.device.type == "cuda"
        return refresh_every(self.refresh_setting, self.ring.layout, gpu)

    def refresh(self, floor: int) -> None:
        """Recompute the keys and values of positions floor .. head-1 from their own tokens, C
        at a time, as a fresh forward over the pinned tokens and them would. With CUDA graphs
        every piece is a full chunk (one capture, shared with the stream's): the first
        reaches below the floor, and those positions are hidden afterwards."""
        ring, chunk = self.ring, self.ring.layout.chunk
        first = floor
        if self.refresh_in_full_chunks:
            pieces = -(-(ring.head - floor) // chunk)  # ceil: the window in whole chunks
            first = ring.head - pieces * chunk
        for start in range(first, ring.head, chunk):
            plan = ring.plan_refresh(start, min(chunk, ring.head - start), floor)
            ids = self._ids[:, : plan.count]
            torch.index_select(ring.slot_ids, 0, plan.write_slots, out=ids[0])
            self.run(plan, ids)
        ring.finish_refresh(floor)
        self.refreshes += 1

    def scratch(
        self, input_ids: torch.Tensor, logits_to_keep: int = 1, graph: bool = True
    ) -> torch.Tensor:
        plan = self.ring.plan_scratch(input_ids.shape[1])
        return self.run(plan, input_ids, logits_to_keep, graph)
