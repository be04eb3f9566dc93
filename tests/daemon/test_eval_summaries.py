"""`streamd eval-summaries` as a user runs it: the JSON keeps its shape and the facts
are exact (tiny random model: the scores' values do not matter here, their sums do)."""

from __future__ import annotations

import json
from pathlib import Path

from streamd.daemon.tools.demo import sample_lines
from tests.daemon.daemon_testing import cli

REQUIRED_TOTALS = {
    "summaries",
    "claim_precision",
    "claims_checked",
    "top3_recall",
    "complete_ratio",
    "repeated",
    "latency_median_s",
    "latency_max_s",
}


def _eval(tiny_model_dir: Path, text: Path, *extra: str) -> dict:
    result = cli(
        "eval-summaries", str(text), "--model", str(tiny_model_dir), "--device", "cpu",
        "--max-capacity", "512", "--chunk", "64", "--summary-max-tokens", "24",
        "--every-lines", "10", "--max-batches", "3", "--json", *extra,
        timeout_s=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "[3/3] 10 lines" in result.stderr  # progress on stderr, not in the JSON
    return json.loads(result.stdout)


def test_the_json_keeps_its_shape_and_the_facts_add_up(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    text = tmp_path / "auth.log"
    lines = sample_lines()[:30]  # real sshd lines of fail2ban's test data
    text.write_text("\n".join(lines) + "\n")
    report = _eval(tiny_model_dir, text, "--compare")
    assert report["totals"].keys() >= REQUIRED_TOTALS
    assert report["totals"]["summaries"] == 3
    assert report["totals"]["complete_ratio"] == 1.0
    assert len(report["summaries"]) == 3
    for number, summary in enumerate(report["summaries"]):
        assert {"text", "window_text", "facts", "verification", "latency_s"} <= summary.keys()
        since = summary["facts"]["since_last"]
        assert since["lines"] == 10  # each batch's lines, counted once
        assert sum(t["count"] for t in since["templates"]) == since["lines"]
        window = summary["facts"]["window"]
        assert sum(t["count"] for t in window["templates"]) == window["lines"] > 0
        batch = lines[10 * number : 10 * number + 10]
        assert batch[-1] in summary["window_text"]  # the text the model saw, exactly
        assert {"checked", "supported", "unsupported", "removed_sentences"} <= set(
            summary["verification"]
        )
    plain = report["compare"]
    assert plain["totals"].keys() >= REQUIRED_TOTALS and len(plain["summaries"]) == 3
    assert all(s["verification"] is None for s in plain["summaries"])


def test_a_missing_file_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = cli("eval-summaries", str(tmp_path / "nope.log"), "--model", str(tiny_model_dir))
    assert result.returncode == 2
    assert "nope.log" in result.stderr and "No such file" in result.stderr
