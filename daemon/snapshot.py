"""Session snapshots: what a restarted daemon needs to pick up the stream where it was.

One JSON file, `state_dir/snapshot.json`: the window's token ids (not the KV cache: a resume
re-prefills them), the counters, the last summary and the config; written atomically, set
aside when unusable. File work only (no torch, no asyncio), called from a worker thread.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamd.cache.layout import CacheLayout
from streamd.connectors.durable import fsync_directory, replace_atomically
from streamd.errors import ConfigError

FORMAT = "streamd-session-snapshot"
VERSION = 1
FILE_NAME = "snapshot.json"
MAX_BYTES = 64 << 20  # a 1M-token window is ~8 MB of JSON; anything far bigger is not ours
CORRUPT, INCOMPATIBLE, FAILED = "corrupt", "incompatible", "failed"  # why one is set aside


class SnapshotCorrupt(ValueError):
    """The file is not a valid snapshot; the message says what is wrong with it."""


def window_digest(ids: Sequence[int]) -> str:
    """sha256 of the ids written as compact JSON ([1,2,3]): easy to recompute anywhere."""
    return hashlib.sha256(json.dumps(list(ids), separators=(",", ":")).encode()).hexdigest()


def text_digest(text: str) -> str:
    """How a snapshot names the system prompt it was taken under (without storing it twice)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SessionState:
    """A session's stream, as plain data: enough to re-prefill its window and go on."""

    model: str
    max_capacity: int  # P + W when it was taken
    chunk: int
    pinned: int  # P: tokens of the pinned prefix (system prompt and chat header)
    system_prompt_sha256: str
    position: int  # absolute position of the next stream token
    tokens_ingested: int  # stream tokens since the stream began (evicted ones included)
    summaries: int  # summaries the session had decoded
    window_ids: tuple[int, ...]  # the stream tokens a query sees, oldest first

    @property
    def window_start(self) -> int:
        """Absolute position of the oldest window token."""
        return self.position - len(self.window_ids)

    @functools.cached_property
    def digest(self) -> str:
        """Of the window ids; hashed once (a snapshot's encode and its log both ask)."""
        return window_digest(self.window_ids)

    def check(self) -> None:
        """Counters that cannot describe a stream are corruption, not a state to resume."""
        window = len(self.window_ids)
        if min(self.max_capacity, self.chunk, self.pinned) < 1:
            raise SnapshotCorrupt("max_capacity, chunk and pinned must be >= 1")
        if window > self.max_capacity - self.pinned:
            raise SnapshotCorrupt(
                f"{window} window tokens do not fit max_capacity {self.max_capacity} "
                f"with {self.pinned} pinned"
            )
        if not window <= self.tokens_ingested <= self.position - self.pinned:
            raise SnapshotCorrupt(
                f"counters disagree: {window} window tokens, {self.tokens_ingested} ingested, "
                f"position {self.position}, {self.pinned} pinned"
            )
        if self.summaries < 0 or any(token < 0 for token in self.window_ids):
            raise SnapshotCorrupt("negative summary count or token id")


@dataclass(frozen=True)
class Snapshot:
    session: SessionState
    summaries_emitted: int  # seq of the last summary record written
    last_summary: dict[str, Any] | None  # that record, as the outputs wrote it
    config: dict[str, Any]  # the effective config (secrets redacted), for people
    written_at: float  # Unix time
    version: int = VERSION
    # The spool position the session includes: every spooled message up to it is in the
    # window (or was dropped, counted). A resume replays only the spool after it. None:
    # taken without a spool (replay all the spool holds).
    spool_upto: int | None = None


@dataclass(frozen=True)
class Expected:
    """What a snapshot must match to be resumed by this daemon."""

    model: str
    max_capacity: int
    system_prompt_sha256: str


def incompatibility(snapshot: Snapshot, expected: Expected) -> str | None:
    """Why this daemon cannot resume the snapshot, or None if it can."""
    state = snapshot.session
    if state.model != expected.model:
        return f"taken with model {state.model!r}, this daemon runs {expected.model!r}"
    if state.max_capacity != expected.max_capacity:
        return (
            f"taken at max_capacity {state.max_capacity}, this daemon has {expected.max_capacity}"
            " (a live `tune` is not kept across restarts)"
        )
    if state.system_prompt_sha256 != expected.system_prompt_sha256:
        return "taken under another system prompt (cache.system_prompt changed)"
    return None


# --- JSON -----------------------------------------------------------------------------------


def encode(snapshot: Snapshot) -> bytes:
    state = snapshot.session
    session = {
        "model": state.model,
        "max_capacity": state.max_capacity,
        "chunk": state.chunk,
        "pinned": state.pinned,
        "system_prompt_sha256": state.system_prompt_sha256,
        "position": state.position,
        "tokens_ingested": state.tokens_ingested,
        "summaries": state.summaries,
        "window_sha256": state.digest,  # checked on load: a flipped id is corruption
        "window_ids": list(state.window_ids),
    }
    document = {
        "format": FORMAT,
        "version": snapshot.version,
        "written_at": snapshot.written_at,
        "written_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot.written_at)),
        "summaries_emitted": snapshot.summaries_emitted,
        "last_summary": snapshot.last_summary,
        "session": session,
        "config": snapshot.config,
        "spool_upto": snapshot.spool_upto,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(data: bytes) -> Snapshot:
    """Parse and validate; raises SnapshotCorrupt naming the first problem found."""
    try:
        document = json.loads(data)
    except RecursionError:
        raise SnapshotCorrupt("nested too deeply to be a snapshot") from None
    except ValueError as error:  # not UTF-8, not JSON, or an integer of over 4300 digits
        raise SnapshotCorrupt(f"not JSON: {error}") from None
    top = _Fields(document, "the file")
    if top.get("format", str) != FORMAT:
        raise SnapshotCorrupt(f"format is not {FORMAT!r}")
    version = top.get("version", int)
    if version != VERSION:
        raise SnapshotCorrupt(f"version {version}, this streamd reads version {VERSION}")
    session = _Fields(top.get("session", dict), "session")
    state = SessionState(
        model=session.get("model", str),
        max_capacity=session.get("max_capacity", int),
        chunk=session.get("chunk", int),
        pinned=session.get("pinned", int),
        system_prompt_sha256=session.get("system_prompt_sha256", str),
        position=session.get("position", int),
        tokens_ingested=session.get("tokens_ingested", int),
        summaries=session.get("summaries", int),
        window_ids=tuple(session.get("window_ids", list)),
    )
    if not all(_is_int(token) for token in state.window_ids):
        raise SnapshotCorrupt("session.window_ids: must be a list of integers")
    if session.get("window_sha256", str) != state.digest:
        raise SnapshotCorrupt("session.window_ids do not match session.window_sha256")
    state.check()
    last = document.get("last_summary")
    if last is not None and not isinstance(last, dict):
        raise SnapshotCorrupt("last_summary: must be an object or null")
    spool_upto = document.get("spool_upto")
    if spool_upto is not None and not _is_int(spool_upto):
        raise SnapshotCorrupt("spool_upto: must be an int from 0 to below 2^62, or null")
    written_at = float(top.get("written_at", float))
    if not 0 <= written_at < 1e11:  # a Unix time: -Infinity or NaN would break `status`
        raise SnapshotCorrupt(f"written_at {written_at}: not a time")
    return Snapshot(
        session=state,
        summaries_emitted=top.get("summaries_emitted", int),
        last_summary=last,
        config=top.get("config", dict),
        written_at=written_at,
        version=version,
        spool_upto=spool_upto,
    )


MAX_INT = 2**62  # every count and id of a snapshot is an int64 somewhere (torch, NumPy)


def _is_int(value: Any) -> bool:
    """A count or an id: an integer from 0 to below MAX_INT (negative ones are corruption)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_INT


class _Fields:
    """Typed access to a JSON object; a missing or mistyped field is SnapshotCorrupt."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SnapshotCorrupt(f"{where}: must be a JSON object")
        self.value: Mapping[str, Any] = value
        self.where = where

    def get(self, name: str, kind: type) -> Any:
        if name not in self.value:
            raise SnapshotCorrupt(f"{self.where}: missing field {name!r}")
        value = self.value[name]
        ok = _is_int(value) if kind is int else isinstance(value, kind)
        if kind is float:
            ok = _is_int(value) or isinstance(value, float)
        if not ok:
            what = "int, from 0 to below 2^62" if kind is int else kind.__name__
            raise SnapshotCorrupt(f"{self.where}: field {name!r} must be {what}")
        return value


# --- the file -------------------------------------------------------------------------------


def save(path: Path, snapshot: Snapshot) -> int:
    """Replace the snapshot at `path` atomically; returns the bytes written.

    Raises OSError if it could not be written; the old snapshot is then intact.
    """
    data = encode(snapshot)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    replace_atomically(path, data)
    return len(data)


@dataclass(frozen=True)
class Loaded:
    """What load() found: a snapshot to resume, or why there is none."""

    snapshot: Snapshot | None
    problem: str | None = None  # corrupt or incompatible, and why (None: fine or absent)
    moved_to: Path | None = None  # where the unusable file went (None: it could not move)


def load(path: Path, expected: Expected) -> Loaded:
    """The snapshot at `path` if this daemon can resume it; an unusable one is set aside.

    No file is not a problem: Loaded(None). A file that cannot be read (permissions)
    is reported and left where it is.
    """
    try:
        data = _read_bounded(path)
    except FileNotFoundError:
        return Loaded(None)
    except SnapshotCorrupt as error:
        return set_aside(path, CORRUPT, str(error))
    except OSError as error:
        return Loaded(None, f"cannot be read: {error.strerror}")
    try:
        snapshot = decode(data)
    except SnapshotCorrupt as error:
        return set_aside(path, CORRUPT, str(error))
    reason = incompatibility(snapshot, expected)
    if reason is not None:
        return set_aside(path, INCOMPATIBLE, reason)
    return Loaded(snapshot)


def _read_bounded(path: Path) -> bytes:
    # O_NONBLOCK: a FIFO at the path would block an ordinary open until someone writes.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SnapshotCorrupt("not a regular file")
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SnapshotCorrupt(f"larger than {MAX_BYTES >> 20} MiB")
    return data


def set_aside(path: Path, kind: str, reason: str) -> Loaded:
    """Rename an unusable snapshot to PATH.KIND-<UTC time>, never over an earlier one."""
    problem = f"{kind}: {reason}"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.{kind}-{stamp}")
    serial = 1
    while target.exists():  # two in one second: never overwrite an earlier one
        target = path.with_name(f"{path.name}.{kind}-{stamp}-{serial}")
        serial += 1
    try:
        os.rename(path, target)
        fsync_directory(path.parent)
    except OSError as error:
        return Loaded(None, f"{problem}; could not be moved aside: {error.strerror}")
    return Loaded(None, problem, target)


def check_restorable(state: SessionState, layout: CacheLayout, vocab: int) -> None:
    """Raises ConfigError saying why a snapshot cannot resume this session."""
    try:
        state.check()
    except SnapshotCorrupt as error:
        raise ConfigError(f"snapshot: {error}") from None
    if state.pinned != layout.pinned:
        raise ConfigError(
            f"snapshot: its pinned prefix has {state.pinned} tokens, this session's "
            f"{layout.pinned} (another system prompt or chat template)"
        )
    if len(state.window_ids) > layout.window:
        raise ConfigError(
            f"snapshot: {len(state.window_ids)} window tokens, this session's window "
            f"holds {layout.window}"
        )
    if any(token >= vocab for token in state.window_ids):
        raise ConfigError(f"snapshot: a token id past the vocabulary of {vocab}")
