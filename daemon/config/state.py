"""What the daemon keeps in state_dir: session snapshots and the spool of received text
(the `snapshot` and `spool` sections)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .rules import Rule, Section


@dataclass(frozen=True)
class SnapshotConfig(Section):
    """Session snapshots in state_dir: a restarted daemon re-reads the window it had."""

    section: ClassVar[str] = "snapshot"

    # Off: no snapshot is written and none is resumed at start.
    enabled: bool = True
    # A snapshot is a JSON file of the window's token ids (a few bytes a token), written
    # only if the stream moved: a minute of text is what a crash may lose.
    every_seconds: float = field(
        default=60.0, metadata=Rule(at_least=0, hint="0: only at shutdown").meta
    )


@dataclass(frozen=True)
class SpoolConfig(Section):
    """The durable intake: what a source hands over is appended to state_dir/spool before it
    counts as received, replayed at start, and trimmed once ingested and snapshotted."""

    section: ClassVar[str] = "spool"

    # Off: received lines live only in memory until ingested (a restart loses the queue).
    enabled: bool = True
    # Bound on the spool's files. Once full, block sources (PULL, acked senders) wait for
    # room, which a snapshot makes; drop-oldest ones drop the new message (spool_full).
    max_bytes: int = field(
        default=256 * 1024 * 1024, metadata=Rule(at_least=16 * 1024, hint="bytes").meta
    )
    # Writes of sources without acknowledgement reach the disk (fsync) at least this often;
    # an acknowledged line is fsynced before its acknowledgement, whatever this says.
    sync_every_seconds: float = field(default=1.0, metadata=Rule(at_least=0.001).meta)
