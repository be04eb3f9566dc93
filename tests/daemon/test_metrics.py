"""Metrics: exposition text checked against the 0.0.4 grammar, and scraped over real HTTP."""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest

from streamd.daemon import metrics
from streamd.daemon.control.status import source_counts
from streamd.daemon.metrics import MetricsServer, Registry, StreamdMetrics
from streamd.daemon.tools.testing import WAIT_S

# The text format 0.0.4, one line at a time (https://prometheus.io/docs/instrumenting/exposition_formats/).
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = rf'{NAME}="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"(?:[+-]?Inf|NaN|[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
SAMPLE = re.compile(rf"^({NAME})(\{{{LABEL}(?:,{LABEL})*\}})? ({VALUE})$")
HELP = re.compile(rf"^# HELP ({NAME}) .*$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")


def parse(text: str) -> dict[str, float]:
    """{'name{labels}': value}, failing on any line outside the grammar or a sample whose
    family has no # TYPE line before it."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP"):
            assert HELP.match(line), line
        elif m := TYPE.match(line):
            typed[m[1]] = m[2]
        else:
            m = SAMPLE.match(line)
            assert m, f"not a 0.0.4 sample line: {line!r}"
            family = re.sub(r"_(bucket|sum|count)$", "", m[1])
            assert m[1] in typed or typed.get(family) == "histogram", line
            samples[m[1] + (m[2] or "")] = float(m[3])
    return samples


def test_counters_and_gauges_with_labels() -> None:
    registry = Registry()
    messages = registry.counter("t_messages_total", "Messages.", ["source"])
    depth = registry.gauge("t_queue_depth", "Depth.")
    messages.inc(source="zmq")
    messages.inc(3, source="mqtt")
    depth.set(7)
    depth.set(5)
    samples = parse(registry.render())
    assert samples['t_messages_total{source="zmq"}'] == 1
    assert samples['t_messages_total{source="mqtt"}'] == 3
    assert samples["t_queue_depth"] == 5
    assert messages.value(source="mqtt") == 3


def test_misuse_is_refused() -> None:
    registry = Registry()
    counter = registry.counter("t_total", "T.", ["source"])
    with pytest.raises(ValueError, match="non-negative"):
        counter.inc(-1, source="a")
    with pytest.raises(ValueError, match=r"takes labels \('source',\)"):
        counter.inc(reason="x")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.counter("t_total", "again")
    with pytest.raises(ValueError, match="ends in _total"):
        registry.counter("t_count", "A counter exposed as t_count_total.")


def test_label_values_are_escaped() -> None:
    registry = Registry()
    registry.counter("t_total", "Help with \\ and\nnewline.", ["source"]).inc(source='a"b\\c\nd')
    text = registry.render()
    assert '{source="a\\"b\\\\c\\nd"}' in text
    assert "# HELP t_total Help with \\\\ and\\nnewline." in text
    parse(text)


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    registry = Registry()
    hist = registry.histogram("t_seconds", "T.", [0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        hist.observe(value)
    samples = parse(registry.render())
    assert samples['t_seconds_bucket{le="0.1"}'] == 2  # 0.05 and 0.1 (le means <=)
    assert samples['t_seconds_bucket{le="1.0"}'] == 4
    assert samples['t_seconds_bucket{le="+Inf"}'] == 5
    assert samples["t_seconds_count"] == 5
    assert samples["t_seconds_sum"] == pytest.approx(4.65)


def test_labelled_histogram_series() -> None:
    registry = Registry()
    hist = registry.histogram("t_seconds", "T.", [1.0], ["phase"])
    hist.observe(0.5, phase="prefill")
    samples = parse(registry.render())
    assert samples['t_seconds_bucket{le="1.0",phase="prefill"}'] == 1  # names sorted
    assert samples['t_seconds_count{phase="prefill"}'] == 1
    assert hist.count(phase="decode") == 0


def test_quantiles_over_a_bounded_recent_sample() -> None:
    hist = Registry().histogram("t_seconds", "T.", [1.0])
    assert hist.quantile(0.5) is None
    for value in range(1, 101):
        hist.observe(float(value))
    assert (hist.quantile(0.5), hist.quantile(0.99), hist.quantile(1.0)) == (50.0, 99.0, 100.0)
    for _ in range(metrics.RECENT_SAMPLE):
        hist.observe(7.0)
    assert hist.quantile(0.99) == 7.0  # the old values fell out of the sample
    assert hist.count() == 100 + metrics.RECENT_SAMPLE  # the buckets keep everything


def test_updates_from_many_threads_while_rendering() -> None:
    registry = Registry()
    counter = registry.counter("t_total", "T.", ["source"])
    hist = registry.histogram("t_seconds", "T.", [0.5])
    stop = threading.Event()

    def work() -> None:
        for _ in range(5000):
            counter.inc(source="zmq")
            hist.observe(0.25)

    def scrape() -> None:
        while not stop.is_set():
            parse(registry.render())

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work) for _ in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    scraper.join()
    assert counter.value(source="zmq") == 40000
    assert hist.count() == 40000


def test_streamd_metrics_names_and_source_counts() -> None:
    m = StreamdMetrics()
    m.ingest_messages.inc(10, source="zmq")
    m.ingest_dropped.inc(2, source="zmq", reason="queue_full")
    m.ingest_rejected.inc(1, source="mqtt", reason="too_large")
    m.ingest_rejected.inc(1, source="mqtt", reason="bad_utf8")
    m.ingest_ingested.inc(7, source="zmq")
    counts = source_counts(m, [])
    assert {
        name: {k: row[k] for k in ("received", "dropped", "rejected")}
        for name, row in counts.items()
    } == {
        "zmq": {"received": 10, "dropped": 2, "rejected": 0},
        "mqtt": {"received": 0, "dropped": 0, "rejected": 2},
    }
    assert counts["zmq"]["ingested"] == 7 and counts["mqtt"]["ingested"] == 0
    text = m.registry.render()
    for name in (
        "streamd_time_to_first_token_seconds",
        "streamd_inter_token_latency_seconds",
        "streamd_prefill_chunk_seconds",
        "streamd_kv_cache_usage_perc",
        "streamd_ingest_tokens_total",
        "streamd_ingest_messages_total",
        "streamd_ingest_ingested_total",
        "streamd_engine_errors_total",
        "streamd_output_errors_total",
        "streamd_ingest_dropped_total",
        "streamd_ingest_rejected_total",
        "streamd_summaries_total",
        "streamd_queue_depth",
    ):
        assert f"# TYPE {name} " in text
    parse(text)


# --- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    m = StreamdMetrics()
    m.ingest_tokens.inc(42)
    m.time_to_first_token.observe(0.03)
    async with MetricsServer(m.registry, "127.0.0.1", 0) as running:
        yield running


def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), WAIT_S)
    writer.close()
    await writer.wait_closed()
    return reply


@pytest.mark.network
async def test_scrape_over_http(server: MetricsServer) -> None:
    status, content_type, body = await asyncio.to_thread(
        get, f"http://127.0.0.1:{server.port}/metrics"
    )
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(body)
    assert samples["streamd_ingest_tokens_total"] == 42
    assert samples['streamd_time_to_first_token_seconds_bucket{le="0.04"}'] == 1


@pytest.mark.network
@pytest.mark.parametrize(
    ("path", "method", "status"),
    [("/", "GET", 404), ("/metrics?x=1", "GET", 200), ("/metrics", "POST", 405)],
)
async def test_other_requests(server: MetricsServer, path: str, method: str, status: int) -> None:
    got, _, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{server.port}{path}", method)
    assert got == status


@pytest.mark.network
async def test_garbage_and_oversized_requests_are_refused(server: MetricsServer) -> None:
    reply = await raw_request(server.port, b"\x00\xff garbage\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 400 ")
    # http.server's bounds: 100 header lines of at most 64 KiB each (431 past them).
    many = b"GET /metrics HTTP/1.1\r\n" + b"X: a\r\n" * 101 + b"\r\n"
    assert (await raw_request(server.port, many)).startswith(b"HTTP/1.0 431 ")
    # The server is still there afterwards.
    status, _, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200


@pytest.mark.network
async def test_a_silent_client_is_cut_off(
    server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "READ_TIMEOUT_S", 0.1)
    # No reply: the server closes the connection (reader.read() sees the end).
    assert await raw_request(server.port, b"GET /metrics HTTP/1.1\r\n") == b""
