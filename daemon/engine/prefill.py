"""Prefill a batch's tokens; when a forward pass fails, retry the rest once, smaller.

Runs on the engine thread (it imports torch). Some failures go away in a
smaller forward pass: CUDA running out of memory above all, since a chunk's
activations grow with its length. So the first failure is logged, and the
batch goes on from the token where it failed (the ring only commits a chunk
whose forward pass finished, so nothing is prefilled twice or skipped) in
pieces of half a chunk; after an out-of-memory error PyTorch's cached blocks
are released first. If that fails too, the error is raised and the engine
skips the batch, counted. A tokenizer failure is not retried: the same text
would fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from ..metrics import Counter

log = structlog.get_logger(__name__)

OnChunk = Callable[[int, float], None]  # (tokens, seconds) after each forward pass
PrefillIds = Callable[[list[int], OnChunk], None]  # Session.ingest_ids
RETRY_DIVISOR = 2  # the retry's pieces are chunk // RETRY_DIVISOR tokens
ERROR_CHARS = 300  # of the first failure's message, in the log


@dataclass(frozen=True)
class _Failure:
    text: str
    out_of_memory: bool


class _Progress:
    """The on_chunk callback, counting the tokens whose forward pass finished."""

    def __init__(self, on_chunk: OnChunk) -> None:
        self.tokens = 0
        self._on_chunk = on_chunk

    def __call__(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self._on_chunk(tokens, seconds)


def prefill_with_retry(
    prefill: PrefillIds, ids: list[int], chunk: int, on_chunk: OnChunk, retries: Counter
) -> bool:
    """Prefill `ids` (chunks of up to `chunk` tokens); True if it took the retry.
    Raises the retry's error if that fails too."""
    progress = _Progress(on_chunk)
    failure = _attempt(prefill, ids, progress)
    if failure is None:
        return False
    if failure.out_of_memory:
        release_cached_gpu_memory()
    rest, piece = ids[progress.tokens :], max(1, chunk // RETRY_DIVISOR)
    log.warning(
        "prefill failed; retrying the rest of the batch once in smaller pieces",
        error=failure.text,
        tokens_done=progress.tokens,
        tokens_left=len(rest),
        piece_tokens=piece,
    )
    try:
        for start in range(0, len(rest), piece):
            prefill(rest[start : start + piece], progress)
    except Exception:
        retries.inc(outcome="failed")
        raise
    retries.inc(outcome="recovered")
    return True


def _attempt(prefill: PrefillIds, ids: list[int], progress: _Progress) -> _Failure | None:
    try:
        prefill(ids, progress)
    except Exception as error:
        # Only a description leaves this block: the exception's traceback holds the
        # failed forward's frames, and through them its activations, which are the
        # memory an out-of-memory retry needs back.
        text = f"{type(error).__name__}: {error}"[:ERROR_CHARS]
        return _Failure(text, _is_out_of_memory(error))
    return None


def _is_out_of_memory(error: Exception) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError)


def release_cached_gpu_memory() -> None:
    """Hand PyTorch's cached CUDA blocks back (a no-op where CUDA was never used)."""
    import torch

    torch.cuda.empty_cache()
