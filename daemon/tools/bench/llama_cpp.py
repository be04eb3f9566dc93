"""llama.cpp beside streamd: llama.cpp's `llama-bench` on the GGUF file the default model
is loaded from, with streamd's thread count, prompt length and tokens generated.

`streamd bench --device cpu --model default --llama-bench PATH` runs it after its own
measurements (never at the same time: they would share the cores). A llama-bench that
fails (a non-zero exit, a signal such as SIGILL, no JSON, a timeout) gives a LlamaBench
whose `error` says what happened and what to do: never an exception.
scripts/build_llama_bench.sh builds one.
"""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 600.0
_TAIL_CHARS = 600  # of llama-bench's stderr, quoted in an error
_SIGILL_HELP = (
    "an instruction this CPU or its kernel does not run (a GGML_NATIVE=ON build compiles "
    "ggml's AMX path, which dies at its first tile instruction where the kernel grants no "
    "AMX tile state); rebuild it with scripts/build_llama_bench.sh, which enables only the "
    "CPU's own AVX flags"
)


class LlamaBenchError(ValueError):
    """llama-bench's output is not what `-o json` prints."""


@dataclass(frozen=True)
class LlamaBench:
    """One llama-bench run: prompt processing (pp) and generation (tg) rates, or an error."""

    command: list[str]
    version: str = "unknown"
    error: str | None = None
    pp_tok_s: float = 0.0
    pp_stddev_tok_s: float = 0.0
    n_prompt: int = 0
    tg_tok_s: float = 0.0
    tg_stddev_tok_s: float = 0.0
    n_gen: int = 0
    # Generation after `depth` tokens already in the context (-d), as streamd's TPOT is
    # measured after its prompt: the same attention work a token. 0 where not measured.
    depth: int = 0
    tg_deep_tok_s: float = 0.0
    n_threads: int = 0
    cpu_info: str = ""
    build_commit: str = ""
    build_number: int = 0
    model_type: str = ""
    repetitions: int = 0

    @property
    def tg_ms_per_token(self) -> float:
        return 1000.0 / self.tg_tok_s

    @property
    def tg_deep_ms_per_token(self) -> float | None:
        return 1000.0 / self.tg_deep_tok_s if self.tg_deep_tok_s > 0 else None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def llama_bench_command(
    executable: Path, gguf: Path, prompt_tokens: int, new_tokens: int, threads: int, reps: int
) -> list[str]:
    """-d 0,P: each test from an empty context and after P tokens (streamd's TPOT comes
    after its P-token prompt)."""
    return [
        str(executable),
        *("-m", str(gguf), "-p", str(prompt_tokens), "-n", str(new_tokens)),
        *("-d", f"0,{prompt_tokens}", "-t", str(threads), "-r", str(reps), "-o", "json"),
    ]


def run_llama_bench(command: list[str], timeout_s: float = TIMEOUT_S) -> LlamaBench:
    """Run llama-bench (a command from llama_bench_command) and read its JSON."""
    version = llama_bench_version(command[0])
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return LlamaBench(command, version, error=f"llama-bench ran past {timeout_s:g} s: stopped")
    except OSError as error:
        return LlamaBench(command, version, error=f"llama-bench did not start: {error}")
    if done.returncode != 0:
        return LlamaBench(command, version, error=exit_message(done.returncode, done.stderr))
    try:
        pp, tg = parse_records(done.stdout)
        deep = deepest_generation(json.loads(done.stdout))
    except LlamaBenchError as error:
        return LlamaBench(command, version, error=str(error))
    return _result(command, version, pp, tg, deep)


def llama_bench_version(executable: str) -> str:
    """The first line `llama-bench --version` prints ("version: 0.6.0-dev (build 0,
    commit unknown)"), on stderr in the builds seen; "unknown" when it says nothing."""
    try:
        done = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return next((line for line in lines if "version" in line), lines[0] if lines else "unknown")


def exit_message(returncode: int, stderr: str) -> str:
    """Why llama-bench failed, from its exit status and the end of its stderr."""
    died = died_of(returncode)
    if returncode < 0 and died is not None:
        what = f"llama-bench died of {died.name}"
    elif died is not None:  # a shell reports a child's signal N as 128 + N
        what = f"llama-bench exited with status {returncode} (128 + {died.value}: {died.name})"
    else:
        what = f"llama-bench exited with status {returncode}"
    if died == signal.SIGILL:
        what += f", an illegal instruction: {_SIGILL_HELP}"
    tail = stderr.strip()[-_TAIL_CHARS:]
    return f"{what}; its stderr ended: {tail!r}" if tail else what


def died_of(returncode: int) -> signal.Signals | None:
    """The signal behind an exit status: -N from subprocess, 128 + N from a shell."""
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    try:
        return signal.Signals(number)
    except ValueError:
        return None


def parse_records(stdout: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pp record, tg record) from `llama-bench -o json`: a list of records, one per test,
    with n_prompt, n_gen, avg_ts, stddev_ts, n_threads, cpu_info, build_commit..."""
    try:
        records = json.loads(stdout)
    except json.JSONDecodeError as error:
        raise LlamaBenchError(
            f"llama-bench printed no JSON ({error}); its output began: {stdout[:200]!r}"
        ) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise LlamaBenchError(f"llama-bench's JSON is not a list of records: {stdout[:200]!r}")
    pp = _record(records, "n_prompt", "n_gen")
    tg = _record(records, "n_gen", "n_prompt")
    return pp, tg


def deepest_generation(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The tg record with the most tokens already in context (n_depth > 0), if any."""
    deep = [r for r in records if _int(r, "n_gen") > 0 and _int(r, "n_depth") > 0]
    deep = [r for r in deep if isinstance(r.get("avg_ts"), int | float) and r["avg_ts"] > 0]
    return max(deep, key=lambda r: _int(r, "n_depth"), default=None)


def _record(records: list[dict[str, Any]], length: str, other: str) -> dict[str, Any]:
    """The first record of that test from an empty context."""
    test = "pp" if length == "n_prompt" else "tg"
    for record in records:
        fresh = _int(record, "n_depth") == 0
        if fresh and _int(record, length) > 0 and _int(record, other) == 0:
            rate = record.get("avg_ts")
            if not isinstance(rate, int | float) or rate <= 0:
                raise LlamaBenchError(f"llama-bench's {test} record has no avg_ts > 0: {rate!r}")
            return record
    raise LlamaBenchError(
        f"llama-bench's JSON has no {test} record ({length} > 0, {other} == 0) among "
        f"{len(records)} records"
    )


def _int(record: dict[str, Any], key: str) -> int:
    value = record.get(key, 0)
    return value if isinstance(value, int) else 0


def _result(
    command: list[str],
    version: str,
    pp: dict[str, Any],
    tg: dict[str, Any],
    deep: dict[str, Any] | None,
) -> LlamaBench:
    return LlamaBench(
        command,
        version,
        pp_tok_s=float(pp["avg_ts"]),
        pp_stddev_tok_s=float(pp.get("stddev_ts", 0.0)),
        n_prompt=int(pp["n_prompt"]),
        tg_tok_s=float(tg["avg_ts"]),
        tg_stddev_tok_s=float(tg.get("stddev_ts", 0.0)),
        n_gen=int(tg["n_gen"]),
        n_threads=_int(tg, "n_threads"),
        cpu_info=str(tg.get("cpu_info", "")),
        build_commit=str(tg.get("build_commit", "")),
        build_number=_int(tg, "build_number"),
        model_type=str(tg.get("model_type", "")),
        repetitions=len(tg.get("samples_ts", [])),
        depth=_int(deep, "n_depth") if deep else 0,
        tg_deep_tok_s=float(deep["avg_ts"]) if deep else 0.0,
    )


@dataclass(frozen=True)
class StreamdRates:
    """streamd's numbers to set beside llama.cpp's."""

    prompt_tok_s: float | None  # the rows' prompt through the ring
    stream_tokens: int  # the first scaling checkpoint
    stream_tok_s: float  # ingest rate there
    tpot_ms: float
    max_capacity: int


def render_llama(bench: LlamaBench, ours: StreamdRates) -> list[str]:
    """The report's llama.cpp lines: what ran, then llama.cpp beside streamd."""
    if bench.error is not None:
        return [
            "",
            f"llama.cpp: not measured: {bench.error}",
            f"  command: {' '.join(bench.command)}",
        ]
    lines = [
        "",
        f"llama.cpp: llama-bench {bench.version} | build_commit {bench.build_commit or '?'} "
        f"build {bench.build_number} | threads {bench.n_threads} | {bench.model_type}",
        f"  cpu {bench.cpu_info or '?'}",
        f"{'':<30}{'llama.cpp':>12}{'streamd':>12}{'speed ratio':>13}",
    ]
    pp_label = f"prompt {bench.n_prompt:,} (t/s)"
    lines.append(_line(pp_label, bench.pp_tok_s, ours.prompt_tok_s, 1, speed=True))
    stream_label = f"stream at {ours.stream_tokens:,} (t/s)"
    lines.append(_line(stream_label, bench.pp_tok_s, ours.stream_tok_s, 1, speed=True))
    lines.append(
        _line("decode, empty (ms/token)", bench.tg_ms_per_token, ours.tpot_ms, 3, speed=False)
    )
    deep = bench.tg_deep_ms_per_token
    if deep is not None:
        label = f"decode after {bench.depth:,} (ms/token)"
        lines.append(_line(label, deep, ours.tpot_ms, 3, speed=False))
    lines += [
        "  speed ratio: streamd's speed over llama.cpp's (above 1: streamd faster)",
        "  streamd decodes after its prompt (a full window): 'decode after' is llama.cpp's "
        "same work a token",
        f"  llama.cpp: pp{bench.n_prompt} and tg{bench.n_gen} from an empty context, mean of "
        f"{bench.repetitions} runs (pp ±{bench.pp_stddev_tok_s:,.1f}, "
        f"tg ±{bench.tg_stddev_tok_s:,.1f} t/s); both stream lines compare with its pp",
        f"  streamd: a ring of {ours.max_capacity} (the rows), TPOT from the rows",
    ]
    return lines


def _line(label: str, theirs: float, ours: float | None, digits: int, *, speed: bool) -> str:
    if ours is None or ours <= 0:
        return f"{label:<30}{theirs:>12,.{digits}f}{'-':>12}{'-':>13}"
    ratio = ours / theirs if speed else theirs / ours
    return f"{label:<30}{theirs:>12,.{digits}f}{ours:>12,.{digits}f}{ratio:>12.2f}x"
