"""Summary sinks: stdout, append-only JSONL, ZeroMQ PUB to a real SUB, MQTT retained latest."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import zmq
import zmq.asyncio
from connector_testing import eventually, running

from streamd.connectors.mqtt_broker import MqttBrokerConfig
from streamd.connectors.mqtt_sink import MqttSink, MqttSinkConfig
from streamd.connectors.outputs import JsonlFileSink, StdoutSink, ZmqPubSink, json_line
from streamd.daemon.tools.testing import WAIT_S


def summary(seq: int, text: str = "all quiet") -> dict[str, Any]:
    return {"seq": seq, "time": 1700000000.5 + seq, "stream_tokens": 100 * seq, "text": text}


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_stdout_writes_one_json_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    async with StdoutSink() as sink:
        await sink.emit(summary(1, "a\nb — ünïcode"))
        await sink.emit(summary(2))
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [summary(1, "a\nb — ünïcode"), summary(2)]


async def test_stdout_that_blocks_does_not_block_the_event_loop() -> None:
    # A pipe whose reader is slow: full, so the next write blocks until it reads.
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_fd, b"." * 65536)
    os.set_blocking(write_fd, True)
    received = bytearray()

    def slow_reader() -> None:
        time.sleep(0.5)
        while not received.endswith(b"}\n"):
            received.extend(os.read(read_fd, 65536))

    reader = threading.Thread(target=slow_reader)
    reader.start()
    loop = asyncio.get_running_loop()
    ticks = [loop.time()]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(loop.time())

    with open(write_fd, "w", encoding="utf-8") as stream:
        async with StdoutSink(stream) as sink, running(tick()):
            await sink.emit(summary(1))
            ticks.append(loop.time())
    reader.join()
    os.close(read_fd)
    assert received.lstrip(b".") == json_line(summary(1))
    longest_stall = max(later - earlier for earlier, later in itertools.pairwise(ticks))
    assert longest_stall < 0.25, f"the event loop stalled {longest_stall:.2f}s on a write"


def test_json_line_survives_odd_fields_and_lone_surrogates() -> None:
    line = json_line({"path": Path("/x"), "text": "bad \ud800 char"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"path": "/x", "text": "bad ? char"}


async def test_jsonl_appends_and_never_truncates(tmp_path: Path) -> None:
    path = tmp_path / "summaries.jsonl"
    for seq in (1, 2):  # two daemon runs, one after the other
        async with JsonlFileSink(path) as sink:
            await sink.emit(summary(seq))
            # On disk as soon as emit returns, not at close.
            assert read_jsonl(path)[-1] == summary(seq)
    assert read_jsonl(path) == [summary(1), summary(2)]


async def test_jsonl_fsyncs_each_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A spy around the real os.fsync: the records still go to disk for real.
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    path = tmp_path / "s.jsonl"
    path.write_text("")  # exists: no directory fsync in the count
    async with JsonlFileSink(path) as sink:
        for seq in range(3):
            await sink.emit(summary(seq))
            assert len(synced) == seq + 1


async def test_jsonl_after_a_torn_last_line_starts_on_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(json_line(summary(1)) + b'{"seq": 2, "te')  # killed mid-write
    async with JsonlFileSink(path) as sink:
        await sink.emit(summary(3))
    lines = path.read_text().splitlines()
    assert lines[1] == '{"seq": 2, "te'  # kept as it was, alone on its line
    assert [json.loads(lines[0]), json.loads(lines[2])] == [summary(1), summary(3)]


async def test_jsonl_a_full_disk_midway_leaves_no_torn_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while a record is half written (an injected os.write that writes part
    of what it is asked, then fails with ENOSPC, as a full disk does); once there is room
    again, the next record must be a line of its own. It used to be glued onto the torn
    half: reported written, unparseable."""
    import errno

    real_write = os.write
    disk_full = {"on": False}

    def write(fd: int, data: bytes | memoryview) -> int:
        if disk_full["on"]:
            if len(data) > 8:
                return real_write(fd, bytes(data[:8]))  # the first bytes fit
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    path = tmp_path / "s.jsonl"
    async with JsonlFileSink(path) as sink:
        await sink.emit(summary(1))
        disk_full["on"] = True
        with pytest.raises(OSError, match="No space left"):
            await sink.emit(summary(2))
        disk_full["on"] = False
        await sink.emit(summary(3))
    assert read_jsonl(path) == [summary(1), summary(3)]


async def test_jsonl_missing_directory_fails_at_open_naming_the_path(tmp_path: Path) -> None:
    sink = JsonlFileSink(tmp_path / "no-such-dir" / "s.jsonl")
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        await sink.open()


@pytest.mark.network
async def test_zmq_pub_delivers_to_a_real_sub() -> None:
    context = zmq.asyncio.Context()
    async with ZmqPubSink("tcp://127.0.0.1:*", context=context) as sink:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(sink.endpoint)
        # PUB drops until the subscription has arrived: probe until one gets through.
        received: list[Any] = []

        async def probe_until_heard() -> bool:
            await sink.emit({"probe": True})
            if await sub.poll(20):
                received.append(json.loads(await sub.recv()))
            return bool(received)

        async with asyncio.timeout(WAIT_S):
            while not await probe_until_heard():
                pass
        await sink.emit(summary(7))
        assert json.loads(await asyncio.wait_for(sub.recv(), WAIT_S)) == summary(7)
        sub.close(linger=0)
    context.destroy(linger=0)


def mqtt_sink_config(broker: Any, **kwargs: Any) -> MqttSinkConfig:
    settings = MqttBrokerConfig(
        host=broker.host, port=broker.port, backoff_min_s=0.05, backoff_max_s=0.2, timeout_s=2.0
    )
    return MqttSinkConfig(broker=settings, topic="streamd/summary", **kwargs)


async def late_subscriber_reads(broker: Any, topic: str) -> Any:
    async with aiomqtt.Client(broker.host, broker.port, identifier="late-reader") as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            assert message.retain
            assert isinstance(message.payload, bytes)
            return json.loads(message.payload)


@pytest.mark.network
async def test_mqtt_sink_leaves_the_latest_summary_retained(mosquitto: Any) -> None:
    async with MqttSink(mqtt_sink_config(mosquitto)) as sink:
        for seq in (1, 2, 3):
            await sink.emit(summary(seq))
        await eventually(lambda: sink.pending == 0, "the broker to acknowledge all three")
    latest = await asyncio.wait_for(late_subscriber_reads(mosquitto, "streamd/summary"), 5)
    assert latest == summary(3)


@pytest.mark.network
async def test_mqtt_sink_holds_summaries_through_a_broker_outage(mosquitto: Any) -> None:
    async with MqttSink(mqtt_sink_config(mosquitto)) as sink:
        await eventually(lambda: sink.link.connected, "the sink to connect")
        mosquitto.stop()
        await eventually(lambda: not sink.link.connected, "the idle sink to notice")
        await sink.emit(summary(1))  # returns at once: the broker is away
        await sink.emit(summary(2))
        assert sink.pending == 2
        mosquitto.start()
        await eventually(lambda: sink.pending == 0, "the sink to reconnect and publish")
    assert sink.dropped == 0
    latest = await asyncio.wait_for(late_subscriber_reads(mosquitto, "streamd/summary"), 5)
    assert latest == summary(2)


@pytest.mark.network
async def test_mqtt_sink_drops_oldest_beyond_max_pending_and_closes_in_bounded_time() -> None:
    # No broker at all on this port: everything stays pending.
    broker = MqttBrokerConfig(port=1, backoff_min_s=0.05, backoff_max_s=0.1)
    config = MqttSinkConfig(broker=broker, max_pending=2, close_timeout_s=0.2)
    sink = MqttSink(config)
    async with sink:
        for seq in range(5):
            await sink.emit(summary(seq))
    assert (sink.pending, sink.dropped) == (2, 3)


def test_last_seq_finds_the_largest_recent_number_and_skips_torn_or_foreign_lines(
    tmp_path: Path,
) -> None:
    from streamd.connectors import last_record, last_seq

    path = tmp_path / "summaries.jsonl"
    assert last_seq(path) == 0 and last_record(path) is None  # no file yet: numbering starts at 1
    records = [json.dumps({"seq": n, "summary": "x" * 50}) for n in range(1, 8)]
    path.write_text("\n".join(records) + '\n{"seq": 99, "summ\nnot json\n[1, 2]\n{"seq": true}\n')
    assert last_seq(path) == 7
    # The whole record: a restarted daemon's status takes the last summary's time from it.
    assert last_record(path) == {"seq": 7, "summary": "x" * 50}
