"""The daemon's Prometheus metrics, on prometheus-client, and its GET /metrics endpoint.

Each metric wraps a prometheus-client one and adds what `streamd status` reads: values by
label and, for a histogram, p50/p99 over a bounded sample of recent observations
(Prometheus gets the buckets). Names follow vLLM's (vllm:time_to_first_token_seconds).
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any, Generic, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIEnvironment

import prometheus_client as prom
import structlog

from .scheduling.gauges import SchedulingMetrics

log = structlog.get_logger(__name__)

# No <name>_created series (process-wide): counters, gauges and buckets, as before.
prom.disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECENT_SAMPLE = 1024  # observations kept per histogram series for quantiles
READ_TIMEOUT_S = 5.0  # a metrics client silent this long is cut off
CLOSE_POLL_S = 0.1  # how often the metrics server thread checks for close()

LabelValues = tuple[str, ...]
M = TypeVar("M", prom.Counter, prom.Gauge, prom.Histogram)


class _Metric(Generic[M]):
    """A prometheus-client metric family, read back by label values."""

    def __init__(self, metric: M, name: str, labels: Sequence[str]) -> None:
        self.metric: M = metric
        self.name = name
        self.label_names = tuple(labels)

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.label_names)

    def _child(self, labels: dict[str, str]) -> M:
        key = self._key(labels)
        return self.metric.labels(*key) if key else self.metric

    def _read(self, sample: str) -> dict[LabelValues, float]:
        """{label values: value} of each `sample` line in the exposition (creates no series)."""
        return {
            tuple(s.labels[name] for name in self.label_names): s.value
            for family in self.metric.collect()
            for s in family.samples
            if s.name == sample
        }


class _Scalar(_Metric[M]):
    """Counter and gauge: one float per series."""

    def value(self, **labels: str) -> float:
        return self.values().get(self._key(labels), 0.0)

    def values(self) -> dict[LabelValues, float]:
        """Every series: {label values: value}."""
        return self._read(self.name)


class Counter(_Scalar[prom.Counter]):
    def __init__(
        self, name: str, help_text: str, labels: Sequence[str], registry: prom.CollectorRegistry
    ) -> None:
        # prometheus-client adds _total to a name without it: ask for the name exposed.
        if not name.endswith("_total"):
            raise ValueError(f"{name}: a counter's name ends in _total")
        super().__init__(prom.Counter(name, help_text, labels, registry=registry), name, labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)


class Gauge(_Scalar[prom.Gauge]):
    def __init__(
        self, name: str, help_text: str, labels: Sequence[str], registry: prom.CollectorRegistry
    ) -> None:
        super().__init__(prom.Gauge(name, help_text, labels, registry=registry), name, labels)

    def set(self, value: float, **labels: str) -> None:
        self._child(labels).set(value)


class Histogram(_Metric[prom.Histogram]):
    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Iterable[float],
        labels: Sequence[str],
        registry: prom.CollectorRegistry,
    ) -> None:
        metric = prom.Histogram(name, help_text, labels, registry=registry, buckets=list(buckets))
        super().__init__(metric, name, labels)
        self._lock = threading.Lock()
        self._recent: dict[LabelValues, deque[float]] = {}

    def observe(self, value: float, **labels: str) -> None:
        self._child(labels).observe(value)
        with self._lock:
            recent = self._recent.setdefault(self._key(labels), deque(maxlen=RECENT_SAMPLE))
            recent.append(value)

    def count(self, **labels: str) -> int:
        return int(self._read(f"{self.name}_count").get(self._key(labels), 0))

    def quantile(self, q: float, **labels: str) -> float | None:
        """The q-quantile (0..1, nearest rank) of the last RECENT_SAMPLE observations,
        None before the first one."""
        with self._lock:
            recent = sorted(self._recent.get(self._key(labels), ()))
        if not recent:
            return None
        rank = max(1, math.ceil(q * len(recent)))
        return recent[min(rank, len(recent)) - 1]


class Registry(prom.CollectorRegistry):
    """A prometheus-client registry (one per StreamdMetrics, not the global one) that
    makes the metrics above."""

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, help_text, labels, self)

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, help_text, labels, self)

    def histogram(
        self, name: str, help_text: str, buckets: Iterable[float], labels: Sequence[str] = ()
    ) -> Histogram:
        return Histogram(name, help_text, buckets, labels, self)

    def render(self) -> str:
        """The whole exposition, text format 0.0.4."""
        return prom.generate_latest(self).decode()


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
        self.output_dropped = r.counter(
            "streamd_output_dropped_total",
            "Summaries an output never got: its queue was full (queue_full) or still held "
            "them at exit (shutdown).",
            ["output", "reason"],
        )
        self.snapshots = r.counter(
            "streamd_snapshots_total",
            "Session snapshots written to the state directory, by result (written, failed).",
            ["result"],
        )
        self.last_snapshot_time = r.gauge(
            "streamd_last_snapshot_timestamp_seconds", "Unix time of the last snapshot written."
        )
        self.scheduling = SchedulingMetrics(r)  # engine time, lag, summary triggers


class _Handler(WSGIRequestHandler):
    default_request_version = "HTTP/1.0"  # a status line on every reply, a 400 included

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(READ_TIMEOUT_S)  # per read or write on the socket

    def log_message(self, format: str, *args: Any) -> None:
        """No line on stderr per request."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a thread per connection; none holds up shutdown

    def __init__(self, host: str, port: int) -> None:
        # IPv4 or IPv6, as the host says (a TCPServer is IPv4 unless told).
        self.address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went silent or away: logged at debug, not printed on stderr."""
        log.debug("metrics request failed", client=client_address, error=repr(sys.exc_info()[1]))


class MetricsServer:
    """GET /metrics over HTTP on host:port (port 0: the OS picks; see .port): a wsgiref
    server thread, one request per connection, prometheus-client's text format."""

    def __init__(
        self, registry: prom.CollectorRegistry, host: str = "127.0.0.1", port: int = 9464
    ) -> None:
        self.registry = registry
        self.host = host
        self._port = port
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        return self._port if self._server is None else self._server.server_port

    async def start(self) -> None:
        server = await asyncio.to_thread(_Server, self.host, self._port)
        server.set_app(self._app)
        serve = server.serve_forever
        threading.Thread(target=serve, args=(CLOSE_POLL_S,), name="metrics", daemon=True).start()
        self._server = server
        log.info("metrics endpoint listening", url=f"http://{self.host}:{self.port}/metrics")

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # returns once serve_forever has
            server.server_close()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        content_type = "text/plain; charset=utf-8"
        if environ["PATH_INFO"] != "/metrics":
            status, body = "404 Not Found", b"see /metrics\n"
        elif environ["REQUEST_METHOD"] != "GET":
            status, body = "405 Method Not Allowed", b"only GET\n"
        else:
            status, body, content_type = "200 OK", prom.generate_latest(self.registry), CONTENT_TYPE
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]
