"""Counters, gauges and histograms, and a Prometheus text endpoint (format 0.0.4).

The engine thread updates metrics while the event loop renders them, so each
metric holds a lock. A histogram also keeps a bounded sample of its recent
observations for the p50/p99 that `streamd status` shows; Prometheus gets the
buckets. Names follow vLLM's (vllm:time_to_first_token_seconds ->
streamd_time_to_first_token_seconds).

The HTTP side is a deliberately small asyncio server: GET /metrics and nothing
else, one request per connection, bounded request size and read time.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence

import structlog

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECENT_SAMPLE = 1024  # observations kept per histogram series for quantiles
MAX_REQUEST_HEAD = 8192  # bytes of request line + headers before we give up on a client
READ_TIMEOUT_S = 5.0

LabelValues = tuple[str, ...]


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Metric:
    """A metric family: one series per combination of label values."""

    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.label_names)

    def render(self) -> list[str]:
        head = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        return head + self._samples()

    def _samples(self) -> list[str]:
        raise NotImplementedError


class _Scalar(_Metric):
    """Counter and gauge: one float per series."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {} if labels else {(): 0.0}

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def values(self) -> dict[LabelValues, float]:
        """Every series: {label values: value}."""
        with self._lock:
            return dict(self._values)

    def _add(self, amount: float, labels: dict[str, str]) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def _samples(self) -> list[str]:
        return [
            f"{self.name}{_label_text(self.label_names, key)} {_format_value(value)}"
            for key, value in sorted(self.values().items())
        ]


class Counter(_Scalar):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up (got {amount})")
        self._add(amount, labels)


class Gauge(_Scalar):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._add(amount, labels)

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self._add(-amount, labels)


class _Series:
    """One histogram series: per-bucket counts, sum, and a bounded recent sample."""

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets  # not cumulative; the +Inf bucket is the last
        self.sum = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT_SAMPLE)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, buckets: Iterable[float], labels: Sequence[str] = ()
    ) -> None:
        super().__init__(name, help_text, labels)
        self.bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        self._series: dict[LabelValues, _Series] = {} if labels else {(): self._new_series()}

    def _new_series(self) -> _Series:
        return _Series(len(self.bounds) + 1)

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        # A value equal to a bound belongs to that bucket (le = "less or equal").
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            series = self._series.setdefault(key, self._new_series())
            series.counts[index] += 1
            series.sum += value
            series.recent.append(value)

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return sum(series.counts) if series else 0

    def quantile(self, q: float, **labels: str) -> float | None:
        """The q-quantile (0..1, nearest rank) of the last RECENT_SAMPLE observations,
        None before the first one."""
        with self._lock:
            series = self._series.get(self._key(labels))
            recent = sorted(series.recent) if series else []
        if not recent:
            return None
        rank = max(1, math.ceil(q * len(recent)))
        return recent[min(rank, len(recent)) - 1]

    def _samples(self) -> list[str]:
        with self._lock:
            snapshot = {k: (list(s.counts), s.sum) for k, s in self._series.items()}
        lines: list[str] = []
        for key, (counts, total) in sorted(snapshot.items()):
            lines += self._series_lines(key, counts, total)
        return lines

    def _series_lines(self, key: LabelValues, counts: list[int], total: float) -> list[str]:
        names = (*self.label_names, "le")
        bounds = [*self.bounds, math.inf]
        cumulative, lines = 0, []
        for bound, count in zip(bounds, counts, strict=True):
            cumulative += count
            labels = _label_text(names, (*key, _format_value(bound)))
            lines.append(f"{self.name}_bucket{labels} {cumulative}")
        plain = _label_text(self.label_names, key)
        lines.append(f"{self.name}_sum{plain} {_format_value(total)}")
        lines.append(f"{self.name}_count{plain} {cumulative}")
        return lines


class Registry:
    """The metrics one endpoint exports, in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is registered twice")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help_text, labels)
        self._add(metric)
        return metric

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help_text, labels)
        self._add(metric)
        return metric

    def histogram(
        self, name: str, help_text: str, buckets: Iterable[float], labels: Sequence[str] = ()
    ) -> Histogram:
        metric = Histogram(name, help_text, buckets, labels)
        self._add(metric)
        return metric

    def render(self) -> str:
        """The whole exposition, text format 0.0.4."""
        lines: list[str] = []
        for metric in self._metrics.values():
            lines += metric.render()
        return "\n".join(lines) + "\n"


# Seconds. Prefill chunks and first tokens run from ~1 ms (135M model on a GPU) to
# seconds (7B on CPU); per-token latency on a GPU sits in the low milliseconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    *(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5),
    *(0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0),
)
TOKEN_LATENCY_BUCKETS: tuple[float, ...] = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075),
    *(0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5),
)


class StreamdMetrics:
    """Every metric the daemon exports, created and registered once."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.time_to_first_token = r.histogram(
            "streamd_time_to_first_token_seconds",
            "Summary instruction prefill plus first generated token.",
            LATENCY_BUCKETS,
        )
        self.inter_token_latency = r.histogram(
            "streamd_inter_token_latency_seconds",
            "Time per generated summary token after the first.",
            TOKEN_LATENCY_BUCKETS,
        )
        self.prefill_chunk = r.histogram(
            "streamd_prefill_chunk_seconds", "One stream chunk prefilled.", LATENCY_BUCKETS
        )
        self.summary_latency = r.histogram(
            "streamd_summary_seconds", "One whole summary, wall time.", LATENCY_BUCKETS
        )
        self.kv_cache_usage = r.gauge(
            "streamd_kv_cache_usage_perc", "KV-cache slots in use, 1 means 100 percent."
        )
        self.cache_max_capacity = r.gauge(
            "streamd_cache_max_capacity_tokens", "Tokens a query can see (pinned + window)."
        )
        self.ingest_tokens = r.counter(
            "streamd_ingest_tokens_total", "Stream tokens prefilled into the session."
        )
        self.evicted_tokens = r.counter(
            "streamd_evicted_tokens_total", "Stream tokens that slid out of the window."
        )
        self.ingest_messages = r.counter(
            "streamd_ingest_messages_total", "Messages received, by source.", ["source"]
        )
        self.ingest_ingested = r.counter(
            "streamd_ingest_ingested_total",
            "Messages prefilled into the session, by source (received = ingested + dropped "
            "+ rejected + queued).",
            ["source"],
        )
        self.ingest_dropped = r.counter(
            "streamd_ingest_dropped_total",
            "Messages dropped (backpressure, shutdown, a failed batch), by source and reason.",
            ["source", "reason"],
        )
        self.ingest_rejected = r.counter(
            "streamd_ingest_rejected_total",
            "Messages refused as invalid, by source and reason.",
            ["source", "reason"],
        )
        self.ingest_repaired = r.counter(
            "streamd_ingest_repaired_total",
            "Repairs made to accepted messages, by source and kind: replaced (invalid UTF-8 "
            "sequences), stripped (control characters, escape sequences), cut (long lines).",
            ["source", "kind"],
        )
        self.generation_tokens = r.counter(
            "streamd_generation_tokens_total", "Summary tokens generated."
        )
        self.summaries = r.counter(
            "streamd_summaries_total",
            "Summaries emitted, by trigger (tokens, seconds, request, shutdown).",
            ["trigger"],
        )
        self.last_summary_time = r.gauge(
            "streamd_last_summary_timestamp_seconds", "Unix time of the last summary."
        )
        self.summaries_skipped = r.counter(
            "streamd_summaries_skipped_total",
            "Summaries not written because no new text arrived since the last one, by trigger.",
            ["trigger"],
        )
        self.summary_claims = r.counter(
            "streamd_summary_claims_total",
            "Checkable claims (IPs, numbers, names, paths, quotes, dates) the model wrote in "
            "summaries, by result (supported by the window text or the facts, or unsupported).",
            ["result"],
        )
        self.summary_sentences_removed = r.counter(
            "streamd_summary_sentences_removed_total",
            "Sentences of the model kept out of summaries (unsupported claim, echo, repeat, "
            "incomplete).",
        )
        self.queue_depth = r.gauge("streamd_queue_depth", "Messages waiting in the ingest queue.")
        self.source_reconnects = r.counter(
            "streamd_source_reconnects_total", "Reconnections to a broker, by source.", ["source"]
        )
        self.engine_errors = r.counter(
            "streamd_engine_errors_total",
            "Engine calls that failed and were skipped, by stage (ingest, summary, tune).",
            ["stage"],
        )
        self.ingest_retries = r.counter(
            "streamd_ingest_retries_total",
            "Failed prefills retried once in smaller pieces, by outcome (recovered, failed).",
            ["outcome"],
        )
        self.output_errors = r.counter(
            "streamd_output_errors_total", "Summaries an output failed to write.", ["output"]
        )
        self.snapshots = r.counter(
            "streamd_snapshots_total",
            "Session snapshots written to the state directory, by result (written, failed).",
            ["result"],
        )
        self.last_snapshot_time = r.gauge(
            "streamd_last_snapshot_timestamp_seconds", "Unix time of the last snapshot written."
        )


class MetricsServer:
    """GET /metrics over HTTP/1.x on host:port (port 0: the OS picks; see .port)."""

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 9464) -> None:
        self.registry = registry
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, limit=MAX_REQUEST_HEAD
        )
        log.info("metrics endpoint listening", url=f"http://{self.host}:{self.port}/metrics")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            status, body = self._respond(head.split(b"\r\n", 1)[0])
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            status, body = "400 Bad Request", "bad request\n"
        with contextlib.suppress(ConnectionError):
            await self._write(writer, status, body)

    def _respond(self, request_line: bytes) -> tuple[str, str]:
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "400 Bad Request", "bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method != "GET":
            return "405 Method Not Allowed", "only GET\n"
        if target != "/metrics":
            return "404 Not Found", "see /metrics\n"
        return "200 OK", self.registry.render()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, status: str, body: str) -> None:
        data = body.encode()
        content_type = CONTENT_TYPE if status.startswith("200") else "text/plain; charset=utf-8"
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + data)
        try:
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()
