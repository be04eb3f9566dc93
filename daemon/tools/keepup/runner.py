"""The keepup timeline: start the daemon, feed it at a steady rate while sampling its
status, let it drain, SIGTERM it, and judge.

daemon started -> ready (a progress line every PROGRESS_START_S) -> the feed starts
(`streamd send`, `rate` lines a second) and the status is read every `sample_every_s`
(a progress line every PROGRESS_EVERY_S) -> the feed ends, `streamd send` has every
line acknowledged -> the daemon takes in what is left (drain) -> the last status ->
SIGTERM -> the JSONL's summaries -> checks
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..soak.daemon_runs import read_jsonl
from ..soak.monitor import read_memory
from ..soak.reconcile import Check
from ..testing import DaemonProcess, WaitTimeout, clean_env
from .feeder import Feeder, bundled_log_lines, file_lines
from .options import KeepupOptions
from .report import Daemon, KeepupResult, Lines
from .sampling import ACKED_SOURCE, Sample, progress_line, sample_of
from .verdict import judge_cadence, judge_lag, line_checks, timings_of

PROGRESS_EVERY_S = 30.0  # a progress line this often while the feed runs
PROGRESS_START_S = 15.0  # and while the daemon loads its model
TICK_S = 0.25
# Environment a measurement should honour: where the default model's converted weights
# are kept (a fresh cache costs a conversion, ~30-60 s on two cores, before READY).
KEPT_ENV = ("STREAMD_CACHE_DIR",)

Progress = Callable[[str], None]


class Keepup:
    def __init__(self, options: KeepupOptions, workdir: Path, progress: Progress) -> None:
        self.options = options
        self.workdir = workdir
        self.progress = progress
        self.jsonl = workdir / "summaries.jsonl"
        self.control = workdir / "control.sock"
        self.samples: list[Sample] = []
        (workdir / "state").mkdir(parents=True, exist_ok=True)
        (workdir / "streamd.toml").write_text("")  # no /etc/streamd/streamd.toml sneaks in
        kept = {name: os.environ[name] for name in KEPT_ENV if name in os.environ}
        self.env = clean_env(**kept)
        self.lines = file_lines(options.log_files) if options.log_files else bundled_log_lines()

    def run(self) -> KeepupResult:
        o = self.options
        with contextlib.ExitStack() as cleanup:
            self.daemon = DaemonProcess(
                self._run_args(), self.control, self.workdir / "daemon.log", self.env
            )
            self.daemon.start()
            cleanup.callback(self._stop_daemon_if_running)
            self.progress(f"daemon: pid {self.daemon.pid}, files in {self.workdir}")
            ready_after = self._wait_ready()
            self.started_at, self.started_epoch = time.monotonic(), time.time()
            self.feeder = Feeder(
                self.lines,
                o.rate,
                o.lines,
                self.env | {"STREAMD_CONTROL_SOCKET": str(self.control)},
                self.workdir / "send.log",
                self.started_at,
            )
            cleanup.callback(self.feeder.kill)
            self.progress(
                f"feeding {o.lines} lines at {o.rate:g}/s for {o.duration_s:g} s "
                f"(a line every 30 s says how it goes)"
            )
            self.feeder.start()
            self._watch_feed()
            send_exit = self._wait_sent()
            drain_s = self._drain()
            final = self.daemon.status() or {}
            memory = read_memory(self.daemon.pid)
            self.progress("SIGTERM: the daemon drains, writes a final summary and exits")
            exit_code = self.daemon.stop()
        return self._result(ready_after, send_exit, drain_s, final, memory, exit_code)

    def _run_args(self) -> list[str]:
        o, w = self.options, self.workdir
        return [
            # First: the settings below must win (click keeps an option's last value).
            *o.daemon_args,
            "--config", str(w / "streamd.toml"),
            "--state-dir", str(w / "state"),
            "--control-socket", str(self.control),  # the acked intake.sock goes beside it
            "--model", o.model, "--device", o.device, "--max-capacity", str(o.max_capacity),
            "--summary-every-seconds", str(o.summary_every_seconds),
            "--summary-every-tokens", str(o.summary_every_tokens),
            "--no-stdout", "--jsonl", str(self.jsonl),
            # Nothing on a TCP port another daemon on this machine may hold.
            "--zmq-bind", f"ipc://{w / 'pull.sock'}",
            "--metrics-port", "0",
            "--log-format", "json",
        ]  # fmt: skip

    def _stop_daemon_if_running(self) -> None:
        process = self.daemon.process
        if process is not None and process.poll() is None:
            self.daemon.stop()

    # ------------------------------------------------------------------ phases

    def _wait_ready(self) -> float:
        began = last_note = time.monotonic()
        deadline = began + self.options.start_timeout_s
        while True:
            self.daemon.check_running()
            doc = self.daemon.status()
            if doc is not None and doc.get("state") == "ready":
                ready_after = time.monotonic() - began
                self.progress(f"daemon ready after {ready_after:.1f} s ({doc.get('model')})")
                return ready_after
            now = time.monotonic()
            if now > deadline:
                raise WaitTimeout(
                    f"the daemon was not ready after {self.options.start_timeout_s:g} s "
                    f"(--start-timeout):\n{self.daemon.log_tail()}"
                )
            if now - last_note >= PROGRESS_START_S:
                last_note = now
                state = "not answering yet" if doc is None else doc.get("state")
                what = f"loading {self.options.model} on {self.options.device}"
                self.progress(f"waiting for the daemon: {what}, {state}, {now - began:.0f} s")
            time.sleep(TICK_S)

    def _watch_feed(self) -> None:
        """Sample until the feeder has written its last line; a progress line every 30 s."""
        next_sample, next_note = self.started_at, self.started_at + PROGRESS_EVERY_S
        while self.feeder.is_alive():
            self.daemon.check_running()
            now = time.monotonic()
            if now >= next_sample:
                next_sample += self.options.sample_every_s
                sample = self._sample()
                if sample is not None and now >= next_note:
                    next_note += PROGRESS_EVERY_S
                    self.progress(progress_line(sample))
            time.sleep(TICK_S)
        if self.feeder.error is not None:
            why = f"{self.feeder.error!r}:\n{self.feeder.log_tail()}"
            raise FeedFailed(f"the feed stopped after {self.feeder.sent} lines: {why}")
        sample = self._sample()
        if sample is not None:
            self.progress(f"feed done: {progress_line(sample)}")

    def _sample(self) -> Sample | None:
        doc = self.daemon.status()
        if doc is None:
            return None  # no answer within the status timeout: a gap in the series
        memory = read_memory(self.daemon.pid)
        at_s = time.monotonic() - self.started_at
        sample = sample_of(doc, at_s, self.feeder.sent, None if memory is None else memory[0])
        self.samples.append(sample)
        return sample

    def _wait_sent(self) -> int | None:
        """`streamd send`'s exit code, once its last lines are acknowledged."""
        return self.feeder.wait_sent(self.options.drain_timeout_s)

    def _drain(self) -> float | None:
        """Seconds after the feed until the daemon has ingested every line sent and its
        queue is empty; None if that did not happen within --drain-timeout."""
        ended = self.feeder.ended_at or time.monotonic()
        deadline = time.monotonic() + self.options.drain_timeout_s
        next_sample = time.monotonic()
        while time.monotonic() < deadline:
            self.daemon.check_running()
            if time.monotonic() >= next_sample:
                next_sample += self.options.sample_every_s
                sample = self._sample()
                if sample and sample.ingested >= self.feeder.sent and not sample.queue_depth:
                    return round(time.monotonic() - ended, 3)
            time.sleep(TICK_S)
        self.progress(f"the daemon did not drain within {self.options.drain_timeout_s:g} s")
        return None

    # ------------------------------------------------------------------ result

    def _result(
        self,
        ready_after: float,
        send_exit: int | None,
        drain_s: float | None,
        final: dict[str, Any],
        memory: tuple[int, int] | None,
        exit_code: int,
    ) -> KeepupResult:
        o, feeder = self.options, self.feeder
        feed_s = (feeder.ended_at or time.monotonic()) - self.started_at
        source = final.get("sources", {}).get(ACKED_SOURCE, {})
        lines = Lines(
            planned=o.lines,
            sent=feeder.sent,
            send_exit=send_exit,
            max_late_s=round(feeder.max_late_s, 3),
            received=int(source.get("received", 0)),
            ingested=int(source.get("ingested", 0)),
            rejected=int(source.get("rejected", 0)),
            dropped=int(source.get("dropped", 0)),
            drain_s=drain_s,
        )
        series = [(s.at_s, s.oldest_unread_s) for s in self.samples if s.at_s <= feed_s]
        lag = judge_lag(series, o.max_lag_s, o.lag_slack_s)
        records, _torn = read_jsonl(self.jsonl)
        timings = timings_of(records, self.started_epoch)
        cadence = judge_cadence(timings, o.summary_every_seconds, o.interval_tolerance_s, feed_s)
        rss = [s.rss_bytes for s in self.samples if s.rss_bytes is not None]
        daemon = Daemon(
            model=str(final.get("model", o.model)),
            device=str(final.get("device", o.device)),
            ready_after_s=round(ready_after, 3),
            exit_code=exit_code,
            rss_max_bytes=max(rss, default=None),
            rss_peak_bytes=_peak(memory, rss),
        )
        checks = [
            *line_checks(o.lines, lines.sent, send_exit, lines.received, lines.ingested,
                         lines.max_late_s),
            *lag.checks(),
            *cadence.checks(),
            Check("daemon: SIGTERM at the end exits 0", exit_code == 0, f"exit code {exit_code}"),
        ]  # fmt: skip
        return KeepupResult(
            settings=o.as_json(),
            feed_s=feed_s,
            lines=lines,
            lag=lag,
            cadence=cadence,
            summaries=tuple(timings),
            final_status=final,
            daemon=daemon,
            samples=tuple(self.samples),
            checks=tuple(checks),
        )


class FeedFailed(RuntimeError):
    """`streamd send` died or its stdin broke; the message has its last words."""


def run_keepup(options: KeepupOptions, progress: Progress) -> tuple[KeepupResult, Path]:
    """The result and the folder with the daemon's files (kept on request or on failure)."""
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="streamd-keepup-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = Keepup(options, workdir, progress).run()
    if options.workdir is None and result.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return result, workdir


def _peak(memory: tuple[int, int] | None, sampled: list[int]) -> int | None:
    """VmHWM at the end, or a sampled VmRSS above it: the kernel reads both from per-CPU
    counters that may lag by a few pages, and a CI run saw VmHWM a page below a sample."""
    if memory is None:
        return None
    return max(memory[1], *sampled)
