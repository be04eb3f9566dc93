"""Memory that stays flat on a CPU, whatever sizes the stream's batches come in.

oneDNN (torch's CPU matmuls) caches a compiled primitive per problem shape, 1024 of them
by default, and the daemon's batches come in every size from one line to a chunk: the
cache kept filling, and the daemon's RSS grew by ~430 MB over a 10-minute stream of the
default model (and had not levelled off). With a cache of 8, RSS stays flat after the
first forward, at no measured cost in speed (see DESIGN.md, "The dtype").

A value already in the environment (ONEDNN_PRIMITIVE_CACHE_CAPACITY) is left alone.
"""

from __future__ import annotations

import os

ONEDNN_CACHE_CAPACITY = "8"


def bound_cpu_memory() -> None:
    """Set before the first forward: oneDNN reads the capacity when it first builds one."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
