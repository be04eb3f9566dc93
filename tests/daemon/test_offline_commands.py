"""`streamd eval`, `streamd bench` and `streamd demo` as a user runs them, on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STREAMD = [sys.executable, "-m", "streamd.daemon.cli"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STREAMD, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_eval_json_keeps_the_documented_shape(tiny_model_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 200)
    result = _run(
        "eval",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--text",
        str(text),
        "--tokens",
        "600",
        "--max-capacity",
        "64",
        "--chunk",
        "16",
        "--samples",
        "20",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"model", "tokens", "max_capacity", "sinks", "samples", "policies"} <= report.keys()
    assert report["tokens"] == 600 and report["max_capacity"] == 64 and report["samples"] == 20
    assert report["block"] == 16 and report["targets"] == 320  # the default block
    assert report["refresh_every"] == 30  # auto at max_capacity 64: half the window of 60
    ratio, low, high = report["sinks_over_recompute"]
    assert low <= ratio <= high
    assert set(report["policies"]) == {"dense", "window", "sinks", "sinks-fixed", "recompute"}
    for name, policy in report["policies"].items():
        assert isinstance(policy["ppl_sampled"], float), name
        assert policy["ppl"] is None or policy["ppl"] > 1.0
    assert report["policies"]["recompute"]["ppl"] is None
    assert "tokens" in result.stderr  # progress went to stderr, not into the JSON


def test_eval_refuses_bad_options_in_words(tiny_model_dir: Path) -> None:
    result = _run("eval", "--model", str(tiny_model_dir), "--sinks", "300", "--max-capacity", "256")
    assert result.returncode == 2
    assert "sinks = 300" in result.stderr and "below max_capacity" in result.stderr
    result = _run("eval", "--model", str(tiny_model_dir), "--block", "0")
    assert result.returncode == 2 and "--block" in result.stderr
    result = _run("eval", "--model", str(tiny_model_dir), "--refresh", "sometimes")
    assert result.returncode == 2
    assert "refresh = 'sometimes': must be 'auto', 'off' or" in result.stderr


def test_bench_smoke_on_cpu(tmp_path: Path) -> None:
    result = _run(
        "bench",
        "--shape",
        "tiny",
        "--device",
        "cpu",
        "--scaling",
        "2000,4000",
        "--prompt-tokens",
        "128",
        "--new-tokens",
        "8",
        "--max-capacity",
        "64",
        "--chunk",
        "64",
        "--stream-capacity",
        "128",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"device", "decode_floor_ms", "rows", "scaling", "summary_ttft_s"} <= report.keys()
    assert set(report["rows"]) == {"ppl", "memory_mb", "throughput_tok_s", "ttft_s", "tpot_ms"}
    assert [row["tokens"] for row in report["scaling"]] == [2000, 4000]
    assert report["scaling"][1]["streamd"]["ingest_tok_s"] > 0
    assert report["decode_equal"] is True
    assert "TPOT (ms)" in result.stderr  # the table for people
    # On a CPU memory is the process's resident set: the rows' peak and each checkpoint's.
    assert report["memory_unit"] == "peak RSS MB" and "RSS MB" in result.stderr
    assert report["rows"]["memory_mb"]["baseline"] > 0
    assert report["rows"]["memory_mb"]["streamd"] > 0
    assert all(row["streamd"]["memory_mb"] > 0 for row in report["scaling"])


def test_bench_needs_a_shape_or_a_model() -> None:
    result = _run("bench")
    assert result.returncode == 2 and "exactly one of --shape" in result.stderr


@pytest.mark.parametrize("lines", ["6"])
def test_demo_streams_prints_summaries_and_a_table(tiny_model_dir: Path, lines: str) -> None:
    result = _run(
        "demo",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--lines",
        lines,
        "--rate",
        "100",
        "--max-capacity",
        "128",
        "--chunk",
        "32",
        "--summary-every-tokens",
        "100",
        "--summary-max-tokens",
        "4",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[stats] lines") >= 1
    assert "=== summary" in result.stdout
    assert "stream tokens" in result.stdout and "cache memory" in result.stdout


def test_a_missing_model_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    result = _run("eval", "--model", str(missing), "--tokens", "16")
    assert result.returncode == 2
    assert f"model directory '{missing}' does not exist" in result.stderr


@pytest.mark.slow
def test_a_first_start_logs_to_stderr_and_leaves_json_whole(tmp_path: Path) -> None:
    """The default model's first start writes its cache entries and logs that: on stderr,
    so `streamd eval --json` still prints nothing but its JSON on stdout."""
    env = {**os.environ, "STREAMD_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [*STREAMD, "eval", "--tokens", "128", "--max-capacity", "64", "--json"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tokens"] == 128
    assert "model cache entry written" in done.stderr
