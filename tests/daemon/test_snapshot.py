"""The snapshot file: round trip, atomic replacement, and every kind of unusable file set aside."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamd.connectors import durable
from streamd.daemon.config import ConfigError, load_config
from streamd.daemon.snapshot import (
    Expected,
    SessionState,
    Snapshot,
    SnapshotCorrupt,
    load,
    save,
    text_digest,
    window_digest,
)
from streamd.daemon.tools.testing import WAIT_S

PROMPT = text_digest("You summarize logs.")
EXPECTED = Expected(model="tiny", max_capacity=64, system_prompt_sha256=PROMPT)


def make_snapshot(**changes: Any) -> Snapshot:
    session = {
        "model": "tiny",
        "max_capacity": 64,
        "chunk": 16,
        "pinned": 8,
        "system_prompt_sha256": PROMPT,
        "position": 8 + 100,  # 100 stream tokens after 8 pinned ones...
        "tokens_ingested": 100,
        "summaries": 3,
        "window_ids": tuple(range(500, 556)),  # ...of which the last 56 (the window) are kept
    }
    session.update(changes)
    record = {"seq": 3, "stream_tokens": 90, "text": "ssh failures from 10.0.0.1"}
    return Snapshot(SessionState(**session), 3, record, {"cache": {"max_capacity": 64}}, 1.7e9)


def test_a_snapshot_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "state" / "snapshot.json"  # the state directory is created
    written = make_snapshot()
    assert save(path, written) == path.stat().st_size
    loaded = load(path, EXPECTED)
    assert loaded.snapshot == written and loaded.problem is None
    document = json.loads(path.read_text())
    assert document["session"]["window_sha256"] == window_digest(range(500, 556))
    assert list(tmp_path.joinpath("state").iterdir()) == [path]  # no temporary file left


def test_no_file_means_a_fresh_start_without_a_problem(tmp_path: Path) -> None:
    loaded = load(tmp_path / "missing" / "snapshot.json", EXPECTED)
    assert (loaded.snapshot, loaded.problem, loaded.moved_to) == (None, None, None)


def test_a_write_that_fails_midway_leaves_the_old_snapshot_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "snapshot.json"
    save(path, make_snapshot())
    before = path.read_bytes()

    def disk_full_halfway(fd: int, data: bytes) -> None:  # fault injection
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable, "write_all", disk_full_halfway)
    with pytest.raises(OSError, match="No space left"):
        save(path, make_snapshot(summaries=4))
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # the half-written temporary file is gone
    assert load(path, EXPECTED).snapshot == make_snapshot()


def _replace_field(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        target = document["session"] if name in document["session"] else document
        target[name] = value

    return edit


def _drop_field(name: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        (document["session"] if name in document["session"] else document).pop(name)

    return edit


def _flip_an_id(document: dict[str, Any]) -> None:
    document["session"]["window_ids"][10] += 1


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_replace_field("version", 99), "version 99, this streamd reads version 1"),
        (_replace_field("format", "something-else"), "format is not"),
        (_drop_field("window_ids"), "missing field 'window_ids'"),
        (_drop_field("session"), "missing field 'session'"),
        (_replace_field("position", "108"), "field 'position' must be int"),
        (_replace_field("window_ids", [1, "2"]), "must be a list of integers"),
        (_flip_an_id, "do not match session.window_sha256"),
        (_replace_field("tokens_ingested", 10), "counters disagree"),
        # Seen accepted: a negative count; and one that breaks `status` (exit 1).
        (_replace_field("summaries_emitted", -1), "'summaries_emitted' must be int, from 0"),
        (_replace_field("position", 2**64), "'position' must be int, from 0 to below 2^62"),
        (_replace_field("written_at", float("-inf")), "written_at -inf: not a time"),
        (_replace_field("written_at", float("nan")), "written_at nan: not a time"),
    ],
)
def test_a_corrupt_snapshot_is_set_aside_with_the_reason(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], reason: str
) -> None:
    path = tmp_path / "snapshot.json"
    save(path, make_snapshot())
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    _assert_set_aside(path, "corrupt", reason)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"session": ',
        b"[1, 2]",
        b"\xff\xfe garbage",
        # These stopped the start (RecursionError, ValueError): exit 1, a restart loop.
        b"[" * 100_000 + b"]" * 100_000,
        b'{"format": "streamd-snapshot", "version": ' + b"9" * 5000 + b"}",
    ],
)
def test_a_file_that_is_not_json_is_set_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "snapshot.json"
    path.write_bytes(content)
    _assert_set_aside(path, "corrupt", "")


@pytest.mark.parametrize(
    ("expected", "reason"),
    [
        (Expected("other-model", 64, PROMPT), "taken with model 'tiny', this daemon runs"),
        (Expected("tiny", 128, PROMPT), "taken at max_capacity 64, this daemon has 128"),
        (Expected("tiny", 64, text_digest("other")), "another system prompt"),
    ],
)
def test_an_incompatible_snapshot_is_set_aside_with_the_reason(
    tmp_path: Path, expected: Expected, reason: str
) -> None:
    path = tmp_path / "snapshot.json"
    save(path, make_snapshot())
    _assert_set_aside(path, "incompatible", reason, expected)


def _assert_set_aside(path: Path, kind: str, reason: str, expected: Expected = EXPECTED) -> None:
    content = path.read_bytes()
    loaded = load(path, expected)
    assert loaded.snapshot is None
    assert loaded.problem is not None and loaded.problem.startswith(f"{kind}: ")
    assert reason in loaded.problem
    assert not path.exists()
    assert loaded.moved_to is not None and loaded.moved_to.name.startswith(f"{path.name}.{kind}-")
    assert loaded.moved_to.read_bytes() == content  # nothing lost: kept for a person to look at


def test_files_set_aside_in_the_same_second_do_not_overwrite_each_other(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    moved = []
    for content in (b"first", b"second", b"third"):
        path.write_bytes(content)
        moved.append(load(path, EXPECTED).moved_to)
    assert sorted(p.read_bytes() for p in moved if p) == [b"first", b"second", b"third"]


def test_state_checks_refuse_counters_that_cannot_describe_a_stream() -> None:
    too_long = make_snapshot(window_ids=tuple(range(57)), tokens_ingested=200, position=208)
    with pytest.raises(SnapshotCorrupt, match="do not fit max_capacity 64"):
        too_long.session.check()
    with pytest.raises(SnapshotCorrupt, match="counters disagree"):
        make_snapshot(position=50).session.check()  # the stream began before position 8


def test_snapshot_settings_are_checked_like_every_other_key(tmp_path: Path) -> None:
    empty = tmp_path / "streamd.toml"  # not /etc/streamd/streamd.toml
    empty.write_text("")
    config = load_config(empty, environ={"STREAMD_SNAPSHOT_ENABLED": "off"})
    assert (config.snapshot.enabled, config.snapshot.every_seconds) == (False, 60.0)
    with pytest.raises(ConfigError) as caught:
        load_config(empty, environ={}, overrides={"snapshot.every_seconds": "-1"})
    assert str(caught.value) == (
        "snapshot.every_seconds = -1.0: must be a number >= 0; 0: only at shutdown "
        "(from the command line)"
    )


def test_a_fifo_at_the_snapshot_path_is_set_aside_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO blocks until someone writes: start-up hung. Now it is no snapshot."""
    import os
    import threading

    path = tmp_path / "snapshot.json"
    os.mkfifo(path)
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(load(path, EXPECTED)), daemon=True)
    reader.start()
    reader.join(WAIT_S)
    assert result, "load() is still waiting on the FIFO"
    loaded = result[0]
    assert loaded.snapshot is None and loaded.problem == "corrupt: not a regular file"
    assert not path.exists() and loaded.moved_to is not None
