"""The spool's files (daemon/intake/spool_file.py) and its ledger (spool_ledger.py): records
checked on open, damage skipped and counted, a torn tail cut off, and the watermarks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamd.daemon.config import SpoolConfig
from streamd.daemon.intake.spool import Spool
from streamd.daemon.intake.spool_file import (
    Record,
    SegmentWriter,
    Totals,
    encode,
    read_records,
    read_state,
    scan,
    segment_path,
    write_state,
)
from streamd.daemon.intake.spool_ledger import Ledger
from streamd.daemon.metrics import StreamdMetrics


def record(seq: int, *lines: str, sender: str = "", sender_seq: int = 0) -> Record:
    return Record(seq, "zmq-pull", lines or (f"line {seq}",), 1.7e9 + seq, sender, sender_seq)


def test_records_come_back_as_written(tmp_path: Path) -> None:
    written = [
        record(1, "one", "two"),
        record(2, "ünïcode ✓"),
        record(3, sender="ab" * 16, sender_seq=7),
        Record(4, "zmq-acked", (), 1.7e9, "cd" * 16, 1),  # a rejected acked message's seq
    ]
    path = segment_path(tmp_path, 1)
    path.write_bytes(b"".join(encode(r) for r in written))
    assert list(read_records(path)) == written
    report = scan(tmp_path)
    assert (report.records, report.last_seq, report.skipped_bytes) == (4, 4, 0)
    assert report.senders == {"ab" * 16: 7, "cd" * 16: 1}
    assert [(s.first, s.last, s.size) for s in report.segments] == [(1, 4, path.stat().st_size)]


def test_damage_is_skipped_and_counted_and_a_torn_tail_cut_off(tmp_path: Path) -> None:
    good = [encode(record(seq)) for seq in range(1, 7)]
    damaged = bytearray(good[2])
    damaged[20] ^= 0x01  # a bit flipped inside record 3's body
    torn = good[5][:-4]  # record 6 cut short by a crash
    path = segment_path(tmp_path, 1)
    path.write_bytes(b"".join([good[0], good[1], bytes(damaged), good[3], good[4], torn]))
    report = scan(tmp_path)
    assert [r.seq for r in read_records(path)] == [1, 2, 4, 5]
    assert report.skipped_bytes == len(damaged) + len(torn)
    assert report.damaged == 2
    # The torn tail is gone from the file: the next append starts at a record boundary.
    assert path.stat().st_size == sum(map(len, good[:5]))
    assert scan(tmp_path).skipped_bytes == len(damaged)  # the damage inside stays, skipped


def test_garbage_and_an_empty_segment_never_raise(tmp_path: Path) -> None:
    segment_path(tmp_path, 1).write_bytes(b"SPL1" + b"\xff" * 100 + b"not a record")
    segment_path(tmp_path, 9).write_bytes(b"")
    report = scan(tmp_path)
    assert (report.records, report.last_seq) == (0, 0)
    assert report.skipped_bytes == 116


def test_the_writer_rolls_segments_and_a_trim_keeps_the_state_first(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, segment_bytes=200, segments=[])
    for seq in range(1, 11):
        r = record(seq, "x" * 40)
        writer.append([r], encode(r))
    writer.sync()
    firsts = [s.first for s in writer.segments]
    assert len(firsts) > 2 and firsts[0] == 1
    freed = writer.trim(firsts[2] - 1, next_seq=11, senders={"ab": 3})
    assert freed > 0 and writer.segments[0].first == firsts[2]
    assert read_state(tmp_path) == {
        "next_seq": 11,
        "senders": {"ab": 3},
        "trimmed_upto": firsts[2] - 1,
        "totals": Totals(10, {"zmq-pull": 10}),
    }
    writer.close()
    report = scan(tmp_path)
    assert report.segments[0].first == firsts[2] and report.last_seq == 10


def test_a_missing_or_broken_state_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_state(tmp_path) == {}
    (tmp_path / "state.json").write_text("{not json")
    assert read_state(tmp_path) == {}
    write_state(tmp_path, 5, {"x": 2}, 3)
    assert read_state(tmp_path) == {
        "next_seq": 5,
        "senders": {"x": 2},
        "trimmed_upto": 3,
        "totals": Totals(),
    }
    (tmp_path / "state.json").write_text('{"next_seq": 5, "totals": {"upto": -1, "by_source": 3}}')
    assert read_state(tmp_path)["totals"] == Totals()  # malformed: counted from the segments


def test_lifetime_totals_survive_a_trim_and_a_crash_after_it(tmp_path: Path) -> None:
    """The state file counts what a trim deleted; the segments count what came after the
    last state write (a SIGKILL writes no state): each record counted once, by source."""
    writer = SegmentWriter(tmp_path, segment_bytes=200, segments=[])
    sources = ["zmq-acked", "mqtt", "zmq-acked"] * 6  # 18 records
    for seq, source in enumerate(sources, start=1):
        r = Record(seq, source, (f"line {seq}" + "x" * 30,), 1.7e9 + seq)
        writer.append([r], encode(r))
        if seq == 9:
            writer.sync()
            assert writer.trim(6, next_seq=10, senders={}) > 0  # segments with 1..6 deleted
    writer.sync()  # then a crash: no state written after seq 9
    expected = {"zmq-acked": 12, "mqtt": 6}
    assert writer.totals.by_source == expected
    state = read_state(tmp_path)
    assert state["totals"] == Totals(9, {"zmq-acked": 6, "mqtt": 3})
    report = scan(tmp_path, state["totals"])  # the next start
    assert report.totals == Totals(18, expected)
    assert report.segments[0].first > 1  # the deleted records are not there to count again


def test_the_ledger_marks_what_every_earlier_message_has_reached() -> None:
    ledger = Ledger()
    ledger.start_after(10)  # a restart: up to 10 is in the snapshot
    assert (ledger.handed_mark, ledger.done_mark) == (10, 10)
    for seq in (11, 12, 13, 14):
        ledger.spooled(seq)
    assert (ledger.handed_mark, ledger.done_mark) == (10, 10)
    ledger.handed([11, 12])
    assert (ledger.handed_mark, ledger.done_mark) == (12, 10)
    ledger.done([13])  # dropped by a policy, out of order
    assert (ledger.handed_mark, ledger.done_mark) == (13, 10)
    ledger.done([11, 12])
    assert (ledger.handed_mark, ledger.done_mark) == (13, 13)
    ledger.done([14])
    assert (ledger.handed_mark, ledger.done_mark) == (14, 14)


async def test_the_spool_appends_syncs_trims_and_reports(tmp_path: Path) -> None:
    """The loop's side against real files: numbered appends, an fsync awaited, a trim that
    deletes whole segments, a full spool that refuses a drop-oldest append, and the
    numbers in status and in Prometheus."""
    metrics = StreamdMetrics()
    spool = Spool(tmp_path, SpoolConfig(max_bytes=16 * 1024), metrics)
    await spool.open()
    try:
        seqs = []
        for _ in range(100):
            seq = await spool.append(record(0, "y" * 200), wait=False)
            if seq is None:
                break
            seqs.append(seq)
        assert seqs[:3] == [1, 2, 3]
        assert len(seqs) < 100  # 16 KiB hold fewer: a drop-oldest append was refused
        await spool.synced(seqs[-1])
        status = spool.status()
        assert status["records"] == len(seqs) and status["bytes"] <= 16 * 1024 + 300
        assert status["oldest_age_s"] is not None
        before = spool.bytes
        spool.trim(seqs[-1] - 5)  # the older segments go
        await spool.synced(seqs[-1])
        for _ in range(100):  # the trim's report comes back from the writer thread
            if spool.bytes < before:
                break
            await asyncio.sleep(0.01)
        assert spool.bytes < before
        assert spool.status()["records"] == 5
        exposition = metrics.registry.render()
        assert "streamd_spool_bytes " in exposition
        assert f"streamd_spool_records_total {float(len(seqs))}" in exposition
    finally:
        await spool.close()
    reopened = scan(tmp_path / "spool")
    assert reopened.last_seq == seqs[-1] and reopened.segments[0].first > 1
    state = read_state(tmp_path / "spool")  # written at close, whatever was trimmed
    assert (state["next_seq"], state["trimmed_upto"]) == (seqs[-1] + 1, seqs[-1] - 5)
