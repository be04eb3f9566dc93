"""Summary decoding with static shapes: no host sync inside a step, CUDA-graph ready.

Every decode step attends over all P + R + S slots with a mask, reads its
token, position and slot from static device buffers and advances them on the
device, so one captured step can be replayed for every token. The host looks
at the generated tokens only once per `block` steps to check stop tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .capture import allow_one_compile_per_capture, capture_stream, warm_up_or_unfused
from .fused import FusedDecodeStep, fusion_unsupported
from .hf import RingModel
from .plan import ForwardPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeOptions:
    stop_ids: frozenset[int]
    repetition_penalty: float = 1.0  # CTRL-style, on tokens already generated
    temperature: float = 0.0  # 0 = greedy
    block: int = 16  # steps between host checks for a stop token
    cuda_graph: bool = True  # capture one step and replay it (CUDA only)
    # Fuse the step's elementwise kernels with torch.compile before capturing it:
    # a small model's step is launch-bound (~40 kernels a layer unfused).
    compile: bool = False
    # Decode through FusedDecodeStep (q/k/v and gate/up fused) where the model allows
    # it; else, or with False, through the model's own forward.
    fused: bool = True
    # In the fused step, attention through streamd::decode_attention where its Triton
    # kernels run (a CUDA GPU), rather than inline torch ops.
    attention_op: bool = True
    # What the fused step multiplies by: the model's own weights, or "int4" copies
    # (cache/lowbit.py; a CPU with bf16 activations).
    weights: str = "model"


def pick_token(
    logits: torch.Tensor,
    seen: torch.Tensor,
    penalty: float,
    temperature: float,
    banned: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next token on the device. logits, seen, banned: [vocab] (bool masks). Returns [1] int64.
    A banned token is never picked."""
    scores = logits.float()
    if penalty != 1.0:
        damped = torch.where(scores > 0, scores / penalty, scores * penalty)
        scores = torch.where(seen, damped, scores)
    if banned is not None:
        scores = scores.masked_fill(banned, float("-inf"))
    if temperature > 0.0:
        probs = torch.softmax(scores / temperature, dim=-1)
        # argmax(p / E) with E ~ Exp(1) samples from p without a host sync
        noise = torch.empty_like(probs).exponential_(1)
        return torch.argmax(probs / noise).view(1)
    return torch.argmax(scores).view(1)


class StaticDecoder:
    """Decodes a summary in the ring's scratch slots after its instruction was prefilled."""

    def __init__(self, runner: RingModel, vocab: int, options: DecodeOptions) -> None:
        self.runner = runner
        self.ring = runner.ring
        self.options = options
        device = self.ring.device
        self._token = torch.zeros((1, 1), dtype=torch.int64, device=device)
        self._generated = torch.zeros(
            self.ring.layout.scratch + 1, dtype=torch.int64, device=device
        )
        self._step_index = torch.zeros(1, dtype=torch.int64, device=device)
        self._seen = torch.zeros(vocab, dtype=torch.bool, device=device)
        self._banned = torch.zeros(vocab, dtype=torch.bool, device=device)
        self._banned_ids: tuple[int, ...] = ()
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_generation = -1
        self.use_graph = options.cuda_graph and device.type == "cuda"
        self.first_token_at = 0.0  # perf_counter() when the first token reached the host
        self._fused_step = self._fused_step_for(runner, options)
        # (plan, token [1, 1]) -> logits [1, 1, vocab]
        self._forward: Callable[[ForwardPlan, torch.Tensor], torch.Tensor] = (
            self._fused_step.forward if self._fused_step is not None else runner.forward
        )
        self._step_fn = self._step
        if self.use_graph and options.compile:
            allow_one_compile_per_capture()
            self._step_fn = torch.compile(self._step, dynamic=False)

    def _fused_step_for(self, runner: RingModel, options: DecodeOptions) -> FusedDecodeStep | None:
        reason = fusion_unsupported(runner.model) if options.fused else "fused steps off"
        self.path = "fused step" if reason is None else f"the model's own forward ({reason})"
        if reason is not None:
            log.info("decoding through the model's own forward: %s", reason)
            return None
        return FusedDecodeStep(runner.model, runner.ring, options.attention_op, options.weights)

    @property
    def fused(self) -> bool:
        """Whether steps run through FusedDecodeStep (else the model's own forward)."""
        return self._fused_step is not None

    # ----------------------------------------------------------------- a step

    def _record(self, token: torch.Tensor) -> None:
        """token: [1] int64 on the device."""
        self._generated.index_copy_(0, self._step_index, token)
        self._seen.index_fill_(0, token, True)
        self._token.copy_(token.view(1, 1))
        self._step_index.add_(1)

    def _step(self) -> None:
        """One token: device-only, so it can be captured and replayed."""
        self.ring.refresh_decode()
        plan: ForwardPlan = self.ring.decode_plan
        logits = self._forward(plan, self._token)[0, -1]
        o = self.options
        picked = pick_token(logits, self._seen, o.repetition_penalty, o.temperature, self._banned)
        self._record(picked)
        self.ring.advance_decode()

    # ---------------------------------------------------------------- graphs

    def _ensure_graph(self) -> None:
        if self._graph is not None and self._graph_generation == self.ring.generation:
            return
        # Warm up on a side stream (cuBLAS handles, allocator), then capture one step.
        # Both run inside the caller's scratch bracket, whose end restores the cache.
        # The warm-up steps record tokens at _step_index: left where the last generate()
        # ended (up to scratch + 1), three more would index past _generated.
        self._step_index.zero_()
        stream = capture_stream(self.ring.device)
        stream.wait_stream(torch.cuda.current_stream(self.ring.device))
        with torch.cuda.stream(stream), torch.inference_mode():
            self._warm_up()
        torch.cuda.current_stream(self.ring.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        self.ring.arm_decode()
        with (
            torch.cuda.graph(graph, pool=self.runner.graph_pool, stream=stream),
            torch.inference_mode(),
        ):
            self._step_fn()
        self._graph, self._graph_generation = graph, self.ring.generation

    def _warm_up(self) -> None:
        self._step_fn = warm_up_or_unfused(
            self._step_fn, self._step, self._warm_up_steps, "the decode step"
        )

    def _warm_up_steps(self, step: Callable[[], None]) -> None:
        for _ in range(3):
            self.ring.arm_decode()
            step()

    def _run_steps(self, count: int) -> None:
        for _ in range(count):
            if self._graph is not None:
                self._graph.replay()
            else:
                self._step()

    # -------------------------------------------------------------- generate

    @torch.inference_mode()
    def generate(
        self,
        first_logits: torch.Tensor,
        max_new_tokens: int,
        stop: Callable[[list[int]], bool] | None = None,
        seen: Sequence[int] = (),
        banned: Sequence[int] = (),
    ) -> list[int]:
        """Tokens after the instruction, stop token excluded.

        first_logits: [vocab], the instruction prefill's last position. Must be
        called inside ring.begin_scratch() / end_scratch(), after the prefill.
        `stop(tokens)` is asked at every host check too (a sentence ended, say);
        the tokens past that point are returned, for the caller to cut. The
        repetition penalty counts `seen` (tokens of earlier calls) as generated;
        `banned` tokens are never picked.
        """
        if self.use_graph:
            self._ensure_graph()
        limit = min(max_new_tokens, self.ring.decode_steps_left() + 1)
        _mark(self._seen, seen)
        if tuple(banned) != self._banned_ids:  # the same set each call: marked once
            _mark(self._banned, banned)
            self._banned_ids = tuple(banned)
        self._step_index.zero_()
        o = self.options
        self._record(
            pick_token(first_logits, self._seen, o.repetition_penalty, o.temperature, self._banned)
        )
        self.ring.arm_decode()
        done = 1
        tokens = self._generated[:1].tolist()  # the first token: one sync, for TTFT
        self.first_token_at = time.perf_counter()
        while not self._stopped(tokens) and not (stop and stop(tokens)) and done < limit:
            steps = min(o.block, limit - done)
            self._run_steps(steps)
            done += steps
            tokens = self._generated[:done].tolist()
        self.ring.finish_decode(done - 1)
        return self._cut_at_stop(tokens)[:limit]

    def _stopped(self, tokens: list[int]) -> bool:
        return any(t in self.options.stop_ids for t in tokens)

    def _cut_at_stop(self, tokens: list[int]) -> list[int]:
        for index, token in enumerate(tokens):
            if token in self.options.stop_ids:
                return tokens[:index]
        return tokens


def _mark(mask: torch.Tensor, ids: Sequence[int]) -> None:
    """mask: [vocab] bool, set to exactly `ids` (in place: a captured graph reads it)."""
    mask.zero_()
    if ids:
        mask[torch.tensor(list(ids), device=mask.device)] = True
