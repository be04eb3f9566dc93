"""`streamd bench` on a CPU: memory as the process's RSS, a float32 HF baseline beside
streamd's own dtype, and --llama-bench (llama.cpp) checked before anything loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from streamd.daemon import cli as cli_module
from streamd.daemon.tools.bench.device import CLEAR_REFS, allocated_mb, peak_mb
from tests.daemon.llama_bench_fakes import fake_llama_bench

STREAMD = [sys.executable, "-m", "streamd.daemon.cli"]
CPU = torch.device("cpu")
SMALL = (
    *("--device", "cpu", "--scaling", "1000", "--prompt-tokens", "64", "--new-tokens", "4"),
    *("--max-capacity", "32", "--chunk", "32", "--stream-capacity", "64"),
    *("--baseline-budget", "1", "--json"),
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STREAMD, *args], capture_output=True, text=True, timeout=600, check=False
    )


def _touch_mb(megabytes: int) -> torch.Tensor:
    return torch.ones(megabytes * 2**20 // 4)  # written, so resident


@pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs Linux /proc/self/clear_refs")
def test_cpu_peak_is_the_blocks_own_not_the_process_lifetimes() -> None:
    big = _touch_mb(300)
    del big  # the process's lifetime peak now holds these 300 MB
    quiet: dict[str, float] = {}
    with peak_mb(CPU, quiet):
        small = _touch_mb(20)
    assert quiet["peak"] < allocated_mb(CPU) + 100, (quiet, allocated_mb(CPU))
    del small
    busy: dict[str, float] = {}
    with peak_mb(CPU, busy):
        big = _touch_mb(200)
        del big
    assert busy["peak"] > allocated_mb(CPU) + 150, (busy, allocated_mb(CPU))


def test_help_says_what_a_cpu_run_does_differently() -> None:
    result = CliRunner().invoke(cli_module.main, ["bench", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "10000,100000 on a CPU" in text
    assert "--threads" in text and "--llama-bench" in text
    assert "[auto|int4|float32|float16|bfloat16]" in text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--shape", "tiny"], "this run has --shape tiny: use --model default"),
        (["--model", "./my-model"], "this run has --model ./my-model: use --model default"),
    ],
)
def test_llama_bench_needs_the_default_models_gguf(
    tmp_path: Path, args: list[str], words: str
) -> None:
    fake = fake_llama_bench(tmp_path, "exit 0")
    result = CliRunner().invoke(
        cli_module.main, ["bench", *args, "--device", "cpu", "--llama-bench", str(fake)]
    )
    assert result.exit_code == 2
    assert "--llama-bench runs llama.cpp on the GGUF file --model default" in result.output
    assert words in result.output


def test_llama_bench_must_be_executable(tmp_path: Path) -> None:
    plain = tmp_path / "llama-bench"
    plain.write_text("not a program")
    result = CliRunner().invoke(
        cli_module.main,
        ["bench", "--model", "default", "--device", "cpu", "--llama-bench", str(plain)],
    )
    assert result.exit_code == 2
    assert f"--llama-bench {plain}: not executable" in result.output


def test_a_cpu_baseline_runs_a_float32_copy(tiny_model_dir: Path) -> None:
    """Also: without --stream-capacity a CPU's scaling table streams at what `streamd run`
    there streams through (max_capacity 1024), not the GPU experiment's 2048; it says so."""
    at = SMALL.index("--stream-capacity")
    without_capacity = SMALL[:at] + SMALL[at + 2 :]
    args = ("--model", str(tiny_model_dir), "--dtype", "bfloat16", *without_capacity)
    result = _run("bench", *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["stream_capacity"], report["chunk"]) == (1024, 32)
    assert "scaling: streamd at max_capacity 1,024, chunks of 32 tokens" in result.stderr
    assert (report["baseline_dtype"], report["dtype"]) == ("float32", "bfloat16")
    assert report["baseline_weights_bytes"] == 2 * report["weights_bytes"]
    assert report["threads"] >= 1
    assert "baseline float32, streamd bfloat16" in result.stderr
    assert report["rows"]["memory_mb"]["baseline"] > 0
    assert report["scaling"][0]["baseline"]["memory_mb"] > 0


@pytest.mark.slow
def test_a_failing_llama_bench_leaves_the_rest_of_the_report(tmp_path: Path) -> None:
    """The default model with a llama-bench that dies of SIGILL, as a GGML_NATIVE build
    does on this project's VM: the bench's own table prints, and llama.cpp's part says why."""
    fake = fake_llama_bench(tmp_path, "ulimit -c 0; kill -ILL $$")
    result = _run(
        "bench", "--model", "default", "--threads", "2", "--llama-bench", str(fake), *SMALL
    )  # 2 threads: one made this the suite's slowest test (50 s on CI's two cores)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"]["tpot_ms"]["streamd"] > 0 and report["rows"]["ppl"]["streamd"] > 0
    assert report["baseline_dtype"] == "float32" and report["threads"] == 2
    assert report["llama_cpp"]["error"].startswith("llama-bench died of SIGILL")
    assert (
        "TPOT (ms)" in result.stderr
        and "llama.cpp: not measured: llama-bench died of SIGILL" in result.stderr
    )
    args = (tmp_path / "args").read_text().split()
    assert args[args.index("-t") + 1] == "2"
    assert args[args.index("-p") + 1] == "64" and args[args.index("-n") + 1] == "4"
    assert args[args.index("-m") + 1].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
