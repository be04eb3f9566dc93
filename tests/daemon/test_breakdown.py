"""`streamd eval --breakdown`: the sinks policy against the recompute oracle, split."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from streamd.daemon.engine.loading import LoadedModel
from streamd.daemon.tools.breakdown import BreakdownOptions, breakdown, ratio, variant_buckets

STREAMD = [sys.executable, "-m", "streamd.daemon.cli"]


def _ids(loaded: LoadedModel, tokens: int) -> torch.Tensor:
    text = "The quick brown fox jumps over the lazy dog. " * 200
    return torch.tensor(loaded.encode(text, allow_special=False)[:tokens])


def test_before_any_eviction_the_stream_equals_the_oracle(tiny_loaded: LoadedModel) -> None:
    # max_capacity covers the whole text: both see every earlier token, so any gap is a bug.
    options = BreakdownOptions(windows=(128,), sinks=(4,), chunks=(16,), samples=5, block=8)
    report = breakdown(tiny_loaded.model, _ids(tiny_loaded, 120), 0, options, "tiny")
    (result,) = report.windows
    (variant,) = result.variants
    assert len(variant.nll) == len(result.oracle_nll) == 40
    assert abs(math.log(ratio(variant.nll, result.oracle_nll))) < 1e-4
    for a, b in zip(variant.nll, result.oracle_nll, strict=True):
        assert abs(a - b) < 1e-3


def test_offsets_and_rebase_distances_follow_the_forwards(tiny_loaded: LoadedModel) -> None:
    options = BreakdownOptions(
        windows=(32,), sinks=(4,), chunks=(8,), samples=60, rebase_threshold=24, block=1
    )
    report = breakdown(tiny_loaded.model, _ids(tiny_loaded, 200), 0, options, "tiny")
    (result,) = report.windows
    (variant,) = result.variants
    for target, offset, since in zip(
        result.targets, variant.chunk_offset, variant.since_rebase, strict=True
    ):
        query = target - 1
        if query >= 4:  # past the pinned prefix, forwards start at 4, 12, 20, ...
            assert offset == (query - 4) % 8
        assert 0 <= since <= 24 + 8  # the base moves once the chunk's end passes it
    assert max(result.targets) > 100 and max(variant.since_rebase) < 100  # it did rebase
    splits = variant_buckets(variant, result)
    assert sum(n for _, n in splits["position"].values()) == 60
    assert sum(n for _, n in splits["chunk offset"].values()) == 60


def test_breakdown_cli_prints_json_and_refuses_a_bad_grid(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 200)
    base = [*STREAMD, "eval", "--model", str(tiny_model_dir), "--device", "cpu"]
    args = ["--text", str(text), "--tokens", "300", "--samples", "20", "--breakdown"]
    grid = ["--windows", "64,128", "--sinks-grid", "2", "--chunks", "16", "--prompt"]
    result = subprocess.run(
        [*base, *args, *grid, "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["prefix_tokens"] > 0 and report["tokens"] == 300 + report["prefix_tokens"]
    assert [w["window"] for w in report["windows"]] == [64, 128]
    for window in report["windows"]:
        # --prompt adds "pin the whole prompt" to the pinned choices, where it fits
        pinned = [v["sinks"] for v in window["variants"]]
        assert pinned[0] == 2 and (report["prefix_tokens"] in pinned) == (
            report["prefix_tokens"] < window["window"]
        )
        for variant in window["variants"]:
            low, high = variant["ratio_90"]
            assert low <= variant["ratio"] <= high
            assert min(window["targets"]) > report["prefix_tokens"]  # never a prompt token
    bad = subprocess.run(
        [*base, *args, "--windows", "64,0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "'64,0'" in bad.stderr and "at least 2" in bad.stderr
