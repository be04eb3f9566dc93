"""Each daemon run's counters, from `streamd status`, its "stopped" log event and the JSONL:
every start begins the counters again, so the soak adds up runs. A SIGKILLed run's counters
die with it: then the spool's lifetime totals (kept on disk) tell what was received."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..testing import Broker, free_tcp_port
from .options import SoakOptions
from .payloads import REJECTED_AS
from .reconcile import Counts

TOPIC_ROOT = "soak"  # the MQTT senders publish under it, the daemon subscribes to it all
ZMQ_SOURCE, MQTT_SOURCE = "zmq-acked", "mqtt"  # the daemon's names (daemon/wiring.py)
SOURCES = (ZMQ_SOURCE, MQTT_SOURCE)


@dataclass
class DaemonRun:
    """One daemon process and its counters when it ended. A process counts from zero (a
    resumed one carries its stream and summary count over, not its per-source counters),
    so its final counts are what it counted."""

    index: int
    ready_at_s: float  # on the monitor's clock
    emitted_baseline: int  # summaries emitted as it became ready (carried over on a resume)
    jsonl_lines_at_start: int
    final: dict[str, Counts] | None = None  # None: unknown (SIGKILLed), or not ended yet
    emitted_final: int = 0
    ended_by: str = ""  # "sigterm", "sigkill", or "end"

    @property
    def known(self) -> bool:
        return self.final is not None

    def counted(self, source: str) -> Counts:
        return (self.final or {}).get(source, Counts())

    @property
    def emitted(self) -> int:
        return self.emitted_final - self.emitted_baseline


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(the records, how many lines are not a whole JSON object)."""
    if not path.exists():
        return [], 0
    records, torn = [], 0
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    return records, torn


def jsonl_lines(path: Path) -> int:
    """Lines in the file: each is a record or torn, so this is len(records) + torn."""
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def subscribed(doc: dict[str, Any]) -> bool:
    return bool(doc["sources"].get(MQTT_SOURCE, {}).get("connected"))


def status_counts(doc: dict[str, Any]) -> dict[str, Counts]:
    rows, spool = doc.get("sources", {}), doc.get("spool")
    return {source: Counts.from_status(rows.get(source), spool, source) for source in SOURCES}


def stopped_counts(log_path: Path, stops_before: int) -> dict[str, Counts] | None:
    """The counts of the "stopped" event after the first `stops_before` ones in the
    daemon's JSON log (shared by its runs); None if the run logged none (it crashed)."""
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "stopped":
            events.append(event)
    if len(events) <= stops_before:
        return None
    event = events[stops_before]
    rows, spool = event.get("sources", {}), event.get("spool", {})
    return {source: Counts.from_status(rows.get(source), spool, source) for source in SOURCES}


def spooled_totals(doc: dict[str, Any]) -> dict[str, int]:
    """Messages ever spooled, by source, from a status (the spool's lifetime totals)."""
    return dict(doc.get("spool", {}).get("spooled_by_source", {}))


def spool_state(state_dir: Path) -> dict[str, Any]:
    """The spool's state file as the last stop left it ({} if there is none)."""
    try:
        document = json.loads((state_dir / "spool" / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def settled(doc: dict[str, Any], run: DaemonRun, expected: dict[str, int], jsonl: Path) -> bool:
    """Whether `doc` (a status of the last run) shows everything settled: the spool holds
    at least `expected` (what must have been spooled) by source, nothing is queued or
    replaying, the run's counts balance, no summary is due and every one is written."""
    if doc["queue"]["depth"] or doc.get("spool", {}).get("replaying"):
        return False
    spooled = spooled_totals(doc)
    if any(spooled.get(source, 0) < count for source, count in expected.items()):
        return False
    for source in SOURCES:
        counted = Counts.from_status(doc["sources"].get(source), doc.get("spool"), source)
        if counted.queued or not counted.balanced:
            return False
    every = doc["summaries"]["every_tokens"]
    if every and doc["tokens"]["unsummarized"] >= every:
        return False  # a token-triggered summary is due or running
    emitted = int(doc["summaries"]["emitted"]) - run.emitted_baseline
    return jsonl_lines(jsonl) == run.jsonl_lines_at_start + emitted


def sent_totals(sent_by_source: dict[str, dict[str, int]]) -> dict[str, int]:
    """What each source's senders had taken from them (acknowledged)."""
    return {source: sum(sent_by_source.get(source, {}).values()) for source in SOURCES}


def must_spool(sent_by_source: dict[str, dict[str, int]]) -> dict[str, int]:
    """What each source must have spooled at least: an acked message is spooled even when
    rejected (its number is kept), an MQTT one only when it decodes (payloads.REJECTED_AS)."""
    spooled = sent_totals(sent_by_source)
    rejected = sum(sent_by_source.get(MQTT_SOURCE, {}).get(str(k), 0) for k in REJECTED_AS)
    spooled[MQTT_SOURCE] -= rejected
    return spooled


def run_args(options: SoakOptions, workdir: Path, zmq_address: str, broker: Broker) -> list[str]:
    """`streamd run`'s arguments for every daemon run of the soak."""
    o = options
    return [
        # First: the soak's settings below must win (click keeps an option's last value).
        *o.daemon_args,
        "--config", str(workdir / "streamd.toml"),
        "--state-dir", str(workdir / "state"),
        "--control-socket", str(workdir / "control.sock"),
        "--model", o.model, "--device", o.device, "--max-capacity", str(o.max_capacity),
        "--summary-every-tokens", str(o.summary_every_tokens),
        # Token trigger only: it fires after a batch, so once nothing is queued no
        # summary is pending, and the JSONL's lines match the status' count exactly.
        "--summary-every-seconds", "0",
        "--no-stdout", "--jsonl", str(workdir / "summaries.jsonl"),
        "--zmq-acked-bind", zmq_address,
        "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
        "--mqtt-topic", f"{TOPIC_ROOT}/#",
        # Fixed across daemon restarts: the broker keeps the session under this id.
        "--mqtt-client-id", f"streamd-soak-{broker.port}",
        "--metrics-port", str(free_tcp_port()),
        "--log-format", "json",
    ]  # fmt: skip
