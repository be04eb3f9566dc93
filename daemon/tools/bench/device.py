"""Clocks and memory of one device: synchronized timings, peak and pooled MB, copy bandwidth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def allocated_mb(device: torch.device) -> float:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


@contextmanager
def peak_mb(device: torch.device, out: dict[str, float]) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    out["peak"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def release_cached_memory(device: torch.device) -> None:
    """Free what one side left cached: its cuBLAS workspace (32 MiB per stream on a
    Hopper GPU) and the allocator's cache. The other side's peak then counts only the
    workspace it allocates itself, as the first side's peak counted its own."""
    if device.type != "cuda":
        return
    torch.cuda.synchronize(device)
    clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_workspaces is not None:
        clear_workspaces()
    torch.cuda.empty_cache()


def graph_pools_mb(device: torch.device) -> float:
    """MB reserved by the live CUDA graphs' pools (the allocator's non-default pools)."""
    if device.type != "cuda":
        return 0.0
    segments = torch.cuda.memory._snapshot(device)["segments"]
    pooled = [s["total_size"] for s in segments if tuple(s["segment_pool_id"]) != (0, 0)]
    return sum(pooled) / 2**20


def copy_bandwidth_gb_s(device: torch.device) -> float:
    """Device-to-device copy, bytes read + written per second (the decode ceiling)."""
    size = 2**30 if device.type == "cuda" else 2**26
    src = torch.empty(size, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    began, reps = now(device), 10
    for _ in range(reps):
        dst.copy_(src)
    seconds = now(device) - began
    return 2 * size * reps / seconds / 1e9
