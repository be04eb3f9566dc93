"""What capturing a forward as a CUDA graph needs around it: torch.compile's limits, a
fallback to the eager forward where compiling fails, and one side stream per device."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


def allow_one_compile_per_capture() -> None:
    """Each captured (kind, size) compiles the forward once more, and the cache's write()
    once per layer in each (the layer index is a constant to the compiler): a 36-layer model
    with a few sizes passes torch's default limit of 8, and the old 64, and would silently
    run eager from there on (seen on a Qwen3-8B shape: "hit config.recompile_limit (64)")."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 1024)
    dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4096)


def warm_up_or_unfused(
    compiled: Callable[..., Any],
    eager: Callable[..., Any],
    warm_up: Callable[[Callable[..., Any]], None],
    what: str,
) -> Callable[..., Any]:
    """warm_up(compiled) and return it; if that fails, warm_up(eager) and return eager.

    torch.compile needs a working Triton/C toolchain. Without one, an eager
    forward still replays as one CUDA graph, only with more (unfused) kernels.
    Errors of the eager function itself are raised.
    """
    try:
        warm_up(compiled)
        return compiled
    except Exception as error:
        if compiled == eager:  # bound methods: equal, not identical
            raise
        log.warning("torch.compile of %s failed, running unfused: %s", what, error)
        warm_up(eager)
        return eager


_CAPTURE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per device for every warm-up and every capture.

    cuBLAS keeps a workspace per stream (32 MiB on a Hopper GPU): a fresh
    stream per capture, or torch.cuda.graph's own capture stream beside the
    warm-up's, would leave one more workspace allocated each time.
    """
    if device not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[device] = torch.cuda.Stream(device=device)
    return _CAPTURE_STREAMS[device]
