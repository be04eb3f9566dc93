"""GPU memory and utilisation from NVML for `streamd status`; "no GPU" where there is none.

NVML sees physical GPUs and ignores CUDA_VISIBLE_DEVICES (streamd@N sets it),
so the GPU is found by the UUID torch reports for the session's device, not
by its index. NVML calls can block on a wedged driver: NvmlReader makes them
on a thread of their own, one at a time (not the loop's shared pool, which a wedged
call would eat one thread at a time), and gives up on an answer after NVML_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

NO_GPU = "no GPU"
NO_ANSWER = "NVML did not answer"
NVML_TIMEOUT_S = 1.0  # `status` must answer promptly whatever the driver does


def cuda_uuid(device: str) -> str | None:
    """NVML's UUID ("GPU-...") of a torch device such as "cuda:0"; None for the CPU.
    Imports torch: call it on the engine thread."""
    if not device.startswith("cuda"):
        return None
    import torch

    uuid = str(torch.cuda.get_device_properties(torch.device(device)).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


@functools.cache
def _nvml() -> Any:
    """The initialised pynvml module; raises ImportError or pynvml.NVMLError."""
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def gpu_status(uuid: str | None) -> dict[str, Any]:
    """{"available": True, "name", "memory_used_bytes", "memory_total_bytes",
    "utilization_perc"}, or {"available": False, "reason": ...}."""
    if uuid is None:
        return {"available": False, "reason": NO_GPU}
    try:
        nvml = _nvml()
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
        name = nvml.nvmlDeviceGetName(handle)
    except ImportError:
        return {"available": False, "reason": "NVML unavailable: pip install nvidia-ml-py"}
    except Exception as error:  # pynvml.NVMLError and its many subclasses
        return {"available": False, "reason": f"NVML unavailable: {error}"}
    return {
        "available": True,
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "uuid": uuid,
        "memory_used_bytes": int(memory.used),
        "memory_total_bytes": int(memory.total),
        "utilization_perc": int(utilization.gpu),
    }


class NvmlReader:
    """gpu_status() on one daemon thread of its own, with a time limit: a wedged driver
    makes `status` say so instead of hanging it (or the process's exit)."""

    def __init__(
        self,
        read: Callable[[str | None], dict[str, Any]] = gpu_status,
        timeout_s: float = NVML_TIMEOUT_S,
    ) -> None:
        self._read = read
        self._timeout_s = timeout_s
        self._reading: threading.Thread | None = None  # the last one, maybe still stuck

    async def status(self, uuid: str | None) -> dict[str, Any]:
        if uuid is None:
            return {"available": False, "reason": NO_GPU}
        if self._reading is not None and self._reading.is_alive():
            return {"available": False, "reason": NO_ANSWER}  # the last call never returned
        answer: Future[dict[str, Any]] = Future()
        # A daemon thread: a driver call that never returns must not hold the exit.
        self._reading = threading.Thread(
            target=_answer, args=(answer, self._read, uuid), name="streamd-nvml", daemon=True
        )
        self._reading.start()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(answer), self._timeout_s)
        except TimeoutError:
            return {"available": False, "reason": NO_ANSWER}


def _answer(
    answer: Future[dict[str, Any]], read: Callable[[str | None], dict[str, Any]], uuid: str
) -> None:
    failure: Exception | None = None
    try:
        result = read(uuid)
    except Exception as error:
        result, failure = {}, error
    with contextlib.suppress(InvalidStateError):  # the caller stopped waiting meanwhile
        if failure is not None:
            answer.set_exception(failure)
        else:
            answer.set_result(result)
