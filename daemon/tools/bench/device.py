"""Clocks and memory of one device: synchronized timings, peak and pooled MB, copy bandwidth.

Memory on a GPU is what torch's CUDA allocator holds; on a CPU it is the process's resident
set (RSS, /proc/self/status): the whole process, its weights, Python and torch included.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..soak.monitor import read_memory

# Writing "5" here resets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0).
CLEAR_REFS = Path("/proc/self/clear_refs")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def memory_unit(device: torch.device) -> tuple[str, str]:
    """How the rows' and the scaling table's memory read: (rows label, scaling label)."""
    return ("GPU memory MB", "GPU MB") if device.type == "cuda" else ("peak RSS MB", "RSS MB")


def allocated_mb(device: torch.device) -> float:
    """MB held now: CUDA memory allocated on a GPU, the process's RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _rss()[0] / 2**20


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes; (0, 0) without /proc."""
    return read_memory(os.getpid()) or (0, 0)


def _reset_peak_rss() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:  # no /proc, or a kernel that refuses: the peak is then since start
        return False
    return True


@contextmanager
def peak_mb(device: torch.device, out: dict[str, float]) -> Iterator[None]:
    """out["peak"]: the most MB held within the block: CUDA memory allocated on a GPU;
    on a CPU the peak RSS (VmHWM, reset before the block), or where it cannot be reset,
    the RSS at the block's end."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield
        out["peak"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    reset = _reset_peak_rss()
    yield
    rss, peak = _rss()
    out["peak"] = (peak if reset else rss) / 2**20


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
