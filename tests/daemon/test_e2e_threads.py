"""`--threads`: how many cores the model's CPU matmuls take. On a machine shared with other
busy work, torch's one-thread-per-core pool fights it for the cores (with another test run
beside it, the default model's ingest fell from ~335 to 74 tokens/s on this 2-core box);
fewer threads leave room. A real daemon (tiny model, CPU) reports what it runs with."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon.daemon_testing import Daemon, cli, daemon_args, serving

pytestmark = pytest.mark.network


def test_the_daemon_runs_with_the_threads_asked_for_and_says_so(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    with serving(Daemon(tmp_path, daemon_args(tiny_model_dir, "--threads", "1"))) as daemon:
        status = daemon.status()
        assert status is not None and status["threads"] == 1
        done = cli("status", "--control-socket", str(daemon.control))
        assert done.returncode == 0, done.stderr
        # dtype: float32, bfloat16, or "bfloat16, int4 decode" (a CPU with native bf16)
        assert status["dtype"].split(",")[0] in ("float32", "bfloat16")
        assert f"({status['dtype']}, 1 thread)" in done.stdout


def test_a_negative_thread_count_is_a_bad_setting_named_with_its_fix() -> None:
    done = cli("run", "--threads", "-1", "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert "model.threads = -1" in done.stderr and "0 is one per core" in done.stderr
