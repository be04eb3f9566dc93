"""The soak's timeline: start everything, offer traffic, inject the faults, settle, reconcile.

broker up -> daemon ready and subscribed -> senders, monitor and probes start
-> at evenly spaced times, the traffic going on: broker restarts, daemon SIGTERM + start
   and daemon SIGKILL + start (on the same state directory: the spool and the snapshot
   carry the stream over) -> at the end, settle and SIGTERM the daemon
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from ..testing import DaemonProcess, WaitTimeout, clean_env, free_tcp_port, wait_until
from .broker import start_soak_broker
from .daemon_runs import (
    SOURCES,
    TOPIC_ROOT,
    DaemonRun,
    jsonl_lines,
    must_spool,
    read_jsonl,
    run_args,
    sent_totals,
    settled,
    spool_state,
    spooled_totals,
    status_counts,
    stopped_counts,
    subscribed,
)
from .liveness import LiveWindow, NotifyListener, liveness, probe_judged_by
from .monitor import Monitor
from .options import SIGTERM, SoakOptions, schedule
from .payloads import Mix
from .reconcile import flat_check, summaries_checks
from .report import Faults, SoakResult, Summaries
from .senders import MqttSender, Sender, SenderStuck, ZmqSender
from .verdict import (
    fault_checks,
    liveness_checks,
    memory_trends,
    source_reports,
    spool_check,
)

BROKER_DOWN_S = 1.0  # long enough that every client sees the broker gone
RESUBSCRIBE_TIMEOUT_S = 60.0  # the daemon's reconnect backoff is capped at 30 s
QUIET_S = 1.0  # settled: the counters stayed the same this long
POLL_S = 0.2  # how often a settling daemon is asked for its status
TICK_S = 0.5
HEARTBEAT_S = 30.0  # a progress line this often while the traffic runs

Progress = Callable[[str], None]


class Soak:
    def __init__(self, options: SoakOptions, workdir: Path, progress: Progress) -> None:
        self.options = options
        self.workdir = workdir
        self.progress = progress
        self.jsonl = workdir / "summaries.jsonl"
        self.runs: list[DaemonRun] = []
        self.resubscribed_after: list[float] = []
        self.ready_after: list[float] = []
        self.broker_restarts = self.daemon_kills = self.daemon_sigterms = 0
        self.stop_codes: list[int] = []  # of the mid-flood SIGTERMs
        self.windows: list[LiveWindow] = []
        self.spooled: dict[str, int] | None = None  # the spool's lifetime totals, settled
        self.repairs_reported = False  # the daemon's status has repaired_by_kind
        self.began = self.last_heartbeat = time.monotonic()  # of the traffic (see _drive)
        self.senders: list[Sender] = []
        self.zmq_address = f"tcp://127.0.0.1:{free_tcp_port()}"
        (workdir / "state").mkdir(parents=True, exist_ok=True)
        (workdir / "streamd.toml").write_text("")  # no /etc/streamd/streamd.toml sneaks in

    # ---------------------------------------------------------------- run

    def run(self) -> SoakResult:
        started = time.monotonic()
        with contextlib.ExitStack() as cleanup:
            self.broker = start_soak_broker(self.workdir / "broker")
            cleanup.callback(self.broker.stop)
            self.progress(f"broker: mosquitto on {self.broker.host}:{self.broker.port}")
            self.notify = NotifyListener(self.workdir / "notify.sock")
            self.notify.start()
            cleanup.callback(self.notify.stop)
            env = clean_env(
                NOTIFY_SOCKET=str(self.notify.path),
                WATCHDOG_USEC=str(int(self.options.watchdog_s * 1e6)),
            )
            self.daemon = DaemonProcess(
                run_args(self.options, self.workdir, self.zmq_address, self.broker),
                self.workdir / "control.sock",
                self.workdir / "daemon.log",
                env,
            )
            self.monitor = Monitor(self.jsonl, self.daemon.status)
            self.monitor.start()
            cleanup.callback(self.monitor.stop)
            self.probe = probe_judged_by(self.daemon.status_or_error, self.options.status_p99_s)
            self.probe.start()
            cleanup.callback(self.probe.stop)
            cleanup.callback(self._kill_daemon_if_running)
            self._start_daemon()
            cleanup.enter_context(self._traffic())
            self._drive()
            exit_code, at_shutdown = self._finish()
        return self._result(time.monotonic() - started, exit_code, at_shutdown)

    @contextlib.contextmanager
    def _traffic(self) -> Iterator[None]:
        context: zmq.Context[Any] = zmq.Context()
        try:
            self._make_senders(context)
            for sender in self.senders:
                sender.start()
            yield
        finally:
            for sender in self.senders:
                sender.stop()
            context.term()

    def _make_senders(self, context: zmq.Context[Any]) -> None:
        """Into self.senders one by one, so that a failure leaves them all to be closed."""
        o = self.options
        blob_times = [o.duration_s * (i + 0.5) / o.blobs for i in range(o.blobs)]
        senders = self.senders
        # Acknowledgements stall while a daemon restarts: never give up within a start.
        acked_timeout_s = o.start_timeout_s + o.drain_timeout_s
        for i in range(o.senders):
            common = {"rate": o.rate, "blob_bytes": o.blob_bytes}
            blobs = blob_times if i == 0 else []  # one MQTT publisher carries the blobs
            senders.append(
                ZmqSender(
                    f"soak-zmq-{i}", context, self.zmq_address, acked_timeout_s,
                    mix=Mix(o.malformed, seed=o.seed * 1000 + i), blob_times=[], **common,
                )
            )  # fmt: skip
            senders.append(
                MqttSender(
                    f"soak-mqtt-{i}-{self.broker.port}", self.broker.host, self.broker.port,
                    f"{TOPIC_ROOT}/{i}", mix=Mix(o.malformed, seed=o.seed * 1000 + 500 + i),
                    blob_times=blobs, **common,
                )
            )  # fmt: skip

    def _drive(self) -> None:
        self.began = self.last_heartbeat = time.monotonic()
        for at_s, event in schedule(self.options):
            self._wait_until(self.began + at_s)
            if event == "broker":
                self._restart_broker(self._elapsed_s())
            else:
                self._restart_daemon(event, self._elapsed_s())
        self._wait_until(self.began + self.options.duration_s)

    def _elapsed_s(self) -> float:
        return time.monotonic() - self.began

    def _wait_until(self, deadline: float) -> None:
        while (left := deadline - time.monotonic()) > 0:
            self.daemon.check_running()
            self._check_senders()
            if time.monotonic() - self.last_heartbeat >= HEARTBEAT_S:
                self.last_heartbeat = time.monotonic()
                self.progress(f"{self._elapsed_s():.0f} s: {self._traffic_line()}")
            time.sleep(min(TICK_S, left))

    def _traffic_line(self) -> str:
        """Sent so far and how the daemon keeps up (a growing queue: lower --rate)."""
        sent = sum(sent_totals(self._sent_by_source()).values())
        doc = self.daemon.status()
        if doc is None:
            return f"{sent} messages sent; the daemon does not answer"
        return (
            f"{sent} messages sent; the daemon has {doc['queue']['depth']} queued, "
            f"ingests {doc['tokens']['per_second_1m']:.0f} tokens/s"
        )

    def _check_senders(self) -> None:
        for sender in self.senders:
            if sender.error is not None:
                raise SenderStuck(f"{sender.name} failed: {sender.error!r}") from sender.error

    # ------------------------------------------------------------- faults

    def _restart_broker(self, at_s: float) -> None:
        self.broker.stop()
        time.sleep(BROKER_DOWN_S)
        self.broker.start()
        self.broker_restarts += 1
        went = time.monotonic()
        self.daemon.wait_status(subscribed, "the daemon to re-subscribe", RESUBSCRIBE_TIMEOUT_S)
        self.resubscribed_after.append(round(time.monotonic() - went, 2))
        self.progress(f"{at_s:.0f} s: broker restarted; the daemon re-subscribed")

    def _restart_daemon(self, how: str, at_s: float) -> None:
        """SIGTERM (a clean stop: its counts come from its "stopped" event) or SIGKILL (its
        counts die with it), mid-flood; then a start on the same state directory."""
        self._end_live_window()
        run = self.runs[-1]
        run.ended_by = how
        if how == SIGTERM:
            self.stop_codes.append(self.daemon.stop())
            self.daemon_sigterms += 1
            run.final = stopped_counts(self.daemon.log_path, self._clean_stops())
        else:
            self.daemon.kill()
            self.daemon_kills += 1
        self.progress(f"{at_s:.0f} s: daemon {how.upper()} mid-flood (run {len(self.runs)})")
        self._start_daemon()

    def _clean_stops(self) -> int:
        """How many runs logged a "stopped" event before the one that just stopped."""
        return sum(1 for run in self.runs[:-1] if run.ended_by == SIGTERM)

    def _end_live_window(self) -> None:
        self.probe.live(False)
        self.monitor.unwatch()
        if self.windows and self.windows[-1].end is None:
            self.windows[-1].end = time.monotonic()

    # ------------------------------------------------------- daemon runs

    def _start_daemon(self) -> None:
        went = time.monotonic()
        self.daemon.start()
        self.monitor.watch(len(self.runs), self.daemon.pid)
        doc = self.daemon.wait_status(
            lambda d: d["state"] == "ready" and subscribed(d),
            "the daemon to load the model and subscribe",
            self.options.start_timeout_s,
        )
        self.ready_after.append(round(time.monotonic() - went, 2))
        self.windows.append(LiveWindow(time.monotonic()))
        self.probe.live(True)
        rows = doc["sources"].values()
        self.repairs_reported = all("repaired_by_kind" in row for row in rows)
        self.runs.append(
            DaemonRun(
                index=len(self.runs),
                ready_at_s=self.monitor.now_s(),
                emitted_baseline=int(doc["summaries"]["emitted"]),
                jsonl_lines_at_start=jsonl_lines(self.jsonl),
            )
        )
        self.progress(f"daemon ready (pid {self.daemon.pid}, after {self.ready_after[-1]:.1f} s)")

    def _kill_daemon_if_running(self) -> None:
        process = self.daemon.process
        if process is not None and process.poll() is None:
            self.daemon.kill()

    def _settle(self, when: str) -> None:
        """Pause the senders, let every message land, and keep the run's final counters.

        Counters and messages in flight die with a SIGKILLed daemon, so the table is
        exact by construction: before the kill (and at the end) the senders pause, the
        broker acknowledges every publish, and the soak waits until the status shows
        everything sent as received, nothing queued, every message accounted for and no
        summary pending. Those are the run's final counters; the next run's count from
        its first status (zero, or what a resumed daemon carried over).
        """
        for sender in self.senders:
            sender.pause()
        self.progress(f"settling {when}: senders paused; {self._traffic_line()}")
        for sender in self.senders:
            sender.wait_acked(self.options.drain_timeout_s)
        run, expected = self.runs[-1], must_spool(self._sent_by_source())
        try:
            doc = self._quiet_status(lambda d: settled(d, run, expected, self.jsonl), when)
        except WaitTimeout as timeout:  # the checks will say what did not add up
            self.progress(f"{timeout}; reading the counters as they are")
            doc = self.daemon.status() or {}
        run.final = status_counts(doc)
        run.emitted_final = int(doc.get("summaries", {}).get("emitted", run.emitted_baseline))
        self.spooled = spooled_totals(doc)

    def _quiet_status(self, check: Callable[[dict[str, Any]], bool], when: str) -> dict[str, Any]:
        """The first status that passes `check` and has not changed for QUIET_S."""
        seen: dict[str, Any] = {"key": None, "since": 0.0}

        def quiet() -> dict[str, Any] | None:
            self.daemon.check_running()
            doc = self.daemon.status()
            if doc is None or not check(doc):
                seen["key"] = None
                return None
            key = json.dumps([doc["sources"], doc["summaries"]["emitted"]], sort_keys=True)
            if key != seen["key"]:
                seen.update(key=key, since=time.monotonic())
                return None
            return doc if time.monotonic() - seen["since"] >= QUIET_S else None

        what = f"the daemon to settle {when} (everything sent received, nothing queued)"
        return wait_until(quiet, what, self.options.drain_timeout_s, every_s=POLL_S)

    def _sent_by_source(self) -> dict[str, dict[str, int]]:
        sent: dict[str, dict[str, int]] = {source: {} for source in SOURCES}
        for sender in self.senders:
            for kind, count in sender.sent_by_kind().items():
                sent[sender.source][kind] = sent[sender.source].get(kind, 0) + count
        return sent

    def _finish(self) -> tuple[int, int]:
        """Settle, then SIGTERM: (the daemon's exit code, summaries written at shutdown)."""
        self._settle("at the end")
        before = len(read_jsonl(self.jsonl)[0])  # records: the index into them below
        self._end_live_window()
        self.runs[-1].ended_by = "end"
        exit_code = self.daemon.stop()
        stopped = stopped_counts(self.daemon.log_path, self._clean_stops())
        self.runs[-1].final = stopped or self.runs[-1].final  # the settled status, if none
        records, _ = read_jsonl(self.jsonl)
        at_shutdown = sum(1 for r in records[before:] if r.get("trigger") == "shutdown")
        self.progress(f"daemon stopped (exit code {exit_code})")
        return exit_code, at_shutdown

    # ------------------------------------------------------------ result

    def _result(self, elapsed_s: float, exit_code: int, at_shutdown: int) -> SoakResult:
        sent = self._sent_by_source()
        sources = source_reports(self.runs, sent, self.repairs_reported, self.spooled)
        records, torn = read_jsonl(self.jsonl)
        seqs = [record.get("seq") for record in records]
        last = self.runs[-1]
        summaries = Summaries(
            jsonl_lines=len(records) + torn,
            last_run_lines=len(records) + torn - last.jsonl_lines_at_start,
            emitted=last.emitted,
            at_shutdown=at_shutdown,
            repeated_seq=len(seqs) - len(set(seqs)),
        )
        memory = memory_trends(self.options, self.runs, self.monitor)
        probe = self.probe
        live = liveness(self.notify.pings, self.windows, probe.latencies, probe.unanswered)
        done = (self.broker_restarts, self.daemon_sigterms, self.daemon_kills)
        checks = [
            *(check for report in sources for check in report.checks),
            spool_check(spool_state(self.workdir / "state")),
            *summaries_checks(
                summaries.last_run_lines, torn, summaries.emitted, at_shutdown,
                self.monitor.jsonl_shrank, summaries.repeated_seq,
            ),
            *fault_checks(self.options, done, exit_code, self.stop_codes),
            *liveness_checks(self.options, live),
        ]  # fmt: skip
        memory_checks = [flat_check("daemon RSS", memory.rss, memory.bound)]
        if memory.gpu:
            memory_checks.append(flat_check("GPU memory", memory.gpu, memory.bound))
        faults = Faults(
            self.broker_restarts,
            self.daemon_kills,
            tuple(self.resubscribed_after),
            tuple(self.ready_after),
            self.daemon_sigterms,
        )
        return SoakResult(
            settings=self.options.as_json(),
            elapsed_s=elapsed_s,
            sources=tuple(sources),
            summaries=summaries,
            faults=faults,
            memory=memory,
            daemon_exit_code=exit_code,
            checks=tuple(checks),
            memory_checks=tuple(memory_checks),
            liveness=live,
        )


def run_soak(options: SoakOptions, progress: Progress) -> tuple[SoakResult, Path]:
    """Run the soak; returns the result and the folder with its logs. A temporary folder
    is removed when the soak passed, and kept (for its logs) when it did not."""
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="streamd-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    progress(f"working in {workdir}")
    result = None
    try:
        result = Soak(options, workdir, progress).run()
        return result, workdir
    finally:
        if options.workdir is None and result is not None and result.ok:
            shutil.rmtree(workdir, ignore_errors=True)
