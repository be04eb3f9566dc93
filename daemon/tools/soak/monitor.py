"""A thread that watches the daemon while the soak runs: its memory, and the JSONL output.

Every SAMPLE_EVERY_S it reads the daemon's resident set (VmRSS) and peak
(VmHWM) from /proc/<pid>/status, and the JSONL file's size, which must never
go down (the output is append-only: a smaller file means summaries were
lost). Every GPU_EVERY_S it asks the daemon's status for GPU memory, which is
only there when the daemon runs on a GPU (NVML, the whole device).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_EVERY_S = 0.5
GPU_EVERY_S = 2.0
KIB = 1024


@dataclass(frozen=True)
class Sample:
    at_s: float  # seconds since the monitor started
    run: int  # which daemon process (0, then 1 after a restart, ...)
    value: int  # bytes


def read_memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes, or None once the process is gone (or without /proc)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return _kib(fields["VmRSS"]), _kib(fields["VmHWM"])
    except (KeyError, ValueError):  # a zombie has no memory lines
        return None


def _kib(field: str) -> int:
    return int(field.split()[0]) * KIB  # "  123456 kB"


def gpu_used_bytes(status: dict[str, Any] | None) -> int | None:
    gpu = (status or {}).get("gpu") or {}
    used = gpu.get("memory_used_bytes") if gpu.get("available") else None
    return int(used) if isinstance(used, int | float) else None


class Monitor(threading.Thread):
    def __init__(self, jsonl: Path, status: Callable[[], dict[str, Any] | None]) -> None:
        super().__init__(name="soak-monitor", daemon=True)
        self.jsonl = jsonl
        self.status = status
        self.rss: list[Sample] = []
        self.gpu: list[Sample] = []
        self.peak_rss_by_run: dict[int, int] = {}  # VmHWM: catches spikes between samples
        self.jsonl_shrank: list[str] = []  # what was seen, if the file ever got smaller
        self.started_at = time.monotonic()
        self._watched: tuple[int, int] | None = None  # (run, pid)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._jsonl_size = 0

    def watch(self, run: int, pid: int) -> None:
        with self._lock:
            self._watched = (run, pid)

    def unwatch(self) -> None:
        with self._lock:
            self._watched = None

    def now_s(self) -> float:
        return time.monotonic() - self.started_at

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def run(self) -> None:
        next_gpu = 0.0
        while not self._stopping.wait(SAMPLE_EVERY_S):
            self._check_jsonl()
            with self._lock:
                watched = self._watched
            if watched is None:
                continue
            self._sample_memory(*watched)
            if self.now_s() >= next_gpu:
                next_gpu = self.now_s() + GPU_EVERY_S
                self._sample_gpu(watched[0])

    def _sample_memory(self, run: int, pid: int) -> None:
        memory = read_memory(pid)
        if memory is None:
            return
        rss, hwm = memory
        with self._lock:
            self.rss.append(Sample(self.now_s(), run, rss))
            self.peak_rss_by_run[run] = max(hwm, self.peak_rss_by_run.get(run, 0))

    def _sample_gpu(self, run: int) -> None:
        used = gpu_used_bytes(self.status())
        if used is not None:
            with self._lock:
                self.gpu.append(Sample(self.now_s(), run, used))

    def _check_jsonl(self) -> None:
        try:
            size = self.jsonl.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < self._jsonl_size:
            went = f"went from {self._jsonl_size} to {size} bytes at {self.now_s():.1f}s"
            self.jsonl_shrank.append(f"{self.jsonl} {went}")
        self._jsonl_size = size
