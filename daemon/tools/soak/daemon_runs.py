"""Each daemon run's counters (ready, then settled) from `streamd status` and the JSONL:
a SIGKILL starts the daemon's counters again, so the soak adds up runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .payloads import Kind
from .reconcile import Counts, total

ZMQ_SOURCE, MQTT_SOURCE = "zmq-pull", "mqtt"  # the daemon's names (daemon/wiring.py)
SOURCES = (ZMQ_SOURCE, MQTT_SOURCE)


@dataclass
class DaemonRun:
    """One daemon process: its counters when it became ready and when it was settled."""

    index: int
    ready_at_s: float  # on the monitor's clock
    baseline: dict[str, Counts]
    emitted_baseline: int
    jsonl_lines_at_start: int
    final: dict[str, Counts] = field(default_factory=dict)
    emitted_final: int = 0

    def counted(self, source: str) -> Counts:
        return self.final.get(source, Counts()) - self.baseline.get(source, Counts())

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


def never_received(source: str, sent_by_kind: dict[str, int]) -> dict[str, int]:
    """By kind, what was sent but never reaches the daemon: ZeroMQ blobs past the
    frame limit, which libzmq drops with the connection."""
    if source == ZMQ_SOURCE and sent_by_kind.get(Kind.BLOB):
        return {Kind.BLOB: sent_by_kind[Kind.BLOB]}
    return {}


def jsonl_lines(path: Path) -> int:
    """Lines in the file: each is a record or torn, so this is len(records) + torn."""
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def subscribed(doc: dict[str, Any]) -> bool:
    return bool(doc["sources"].get(MQTT_SOURCE, {}).get("connected"))


def status_counts(doc: dict[str, Any]) -> dict[str, Counts]:
    rows, spool = doc.get("sources", {}), doc.get("spool")
    return {source: Counts.from_status(rows.get(source), spool, source) for source in SOURCES}


def settled(doc: dict[str, Any], runs: list[DaemonRun], sent: dict[str, int], jsonl: Path) -> bool:
    """Whether `doc` (a status) shows the last run settled: nothing queued, everything
    sent received and accounted for over all runs, no summary due, every one written."""
    run = runs[-1]
    if doc["queue"]["depth"]:
        return False
    earlier = runs[:-1]
    for source in SOURCES:
        row = doc["sources"].get(source)
        now = Counts.from_status(row, doc.get("spool"), source) - run.baseline[source]
        counted = total([*(r.counted(source) for r in earlier), now])
        if counted.queued or not counted.balanced or counted.received < sent[source]:
            return False
    every = doc["summaries"]["every_tokens"]
    if every and doc["tokens"]["unsummarized"] >= every:
        return False  # a token-triggered summary is due or running
    emitted = int(doc["summaries"]["emitted"]) - run.emitted_baseline
    return jsonl_lines(jsonl) == run.jsonl_lines_at_start + emitted


def sent_totals(sent_by_source: dict[str, dict[str, int]]) -> dict[str, int]:
    """What each source must have received: sent, less ZeroMQ blobs (never received)."""
    totals = dict.fromkeys(SOURCES, 0)
    for source, by_kind in sent_by_source.items():
        never = never_received(source, by_kind)
        totals[source] = sum(by_kind.values()) - sum(never.values())
    return totals
