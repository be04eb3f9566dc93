"""Options -> model, tokens and report for `streamd bench` (kept out of cli.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from streamd.cache.layout import LayoutError, parse_refresh

from ..engine.loading import load_model, resolve_device, resolve_dtype
from .bench.models import random_model
from .bench.options import BenchOptions
from .bench.report import BenchReport, render
from .bench.runner import run_bench


def _scaling(text: str, fail: Callable[[str], None]) -> tuple[int, ...]:
    try:
        values = tuple(sorted(int(v) for v in text.split(",") if v.strip()))
    except ValueError:
        fail(f"--scaling {text!r}: give stream lengths as integers, e.g. 10000,100000,1000000")
        raise
    if not values or values[0] < 1000:
        fail(f"--scaling {text!r}: lengths must be >= 1000")
    return values


def _model_and_ids(
    shape: str | None, model: str | None, text_path: Path | None, device: str, tokens: int
) -> tuple[Any, str, torch.Tensor, bool]:
    if model is not None:
        loaded = load_model(model, device)
        from .eval_text import read_text_tokens

        ids = read_text_tokens(loaded.tokenizer, text_path, max(tokens, 8192))
        return loaded.model, loaded.name, torch.tensor(ids, device=loaded.device), True
    assert shape is not None
    where = resolve_device(device)
    net = random_model(shape, where, resolve_dtype("auto", where))
    generator = torch.Generator().manual_seed(0)
    random_ids = torch.randint(0, net.config.vocab_size, (max(tokens, 8192),), generator=generator)
    return net, f"random {shape}", random_ids.to(where), False


def write_plot(report: BenchReport, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        click.echo("streamd: --plot needs matplotlib: pip install matplotlib", err=True)
        return
    fig, (mem_ax, rate_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for side, style in (("baseline", "o--"), ("streamd", "s-")):
        points = [
            (r["tokens"], r[side]) for r in report.scaling if r[side] and "failed" not in r[side]
        ]
        if points:
            xs = [p[0] for p in points]
            mem_ax.plot(xs, [p[1]["memory_mb"] for p in points], style, label=side)
            rate_ax.plot(xs, [p[1]["ingest_tok_s"] for p in points], style, label=side)
    for ax, label in ((mem_ax, "GPU memory allocated (MB)"), (rate_ax, "ingest rate (tok/s)")):
        ax.set_xscale("log")
        ax.set_xlabel("stream length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"{report.model} on {report.device}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_bench_command(
    *,
    shape: str | None,
    model: str | None,
    text_path: Path | None,
    device: str,
    as_json: bool,
    plot: Path | None,
    progress: Callable[[str], None],
    fail: Callable[[str], None],
    scaling: str,
    **numbers: Any,
) -> None:
    if (shape is None) == (model is None):
        fail("give exactly one of --shape NAME (random weights) or --model NAME (real weights)")
    try:
        parse_refresh(numbers["refresh"])
    except LayoutError as error:
        fail(f"--refresh: {error}")
    options = BenchOptions(
        scaling=_scaling(scaling, fail),
        **{
            "prompt_tokens": numbers["prompt_tokens"],
            "new_tokens": numbers["new_tokens"],
            "max_capacity": numbers["max_capacity"],
            "stream_capacity": numbers["stream_capacity"],
            "chunk": numbers["chunk"],
            "baseline_budget_s": numbers["baseline_budget"],
            "compile": numbers["compile"],
            "refresh": numbers["refresh"],
        },
    )
    progress(f"loading {model or shape}...")
    net, name, ids, real = _model_and_ids(shape, model, text_path, device, options.prompt_tokens)
    report = run_bench(net, name, ids, options, real, progress)
    if plot is not None:
        write_plot(report, plot)
    if as_json:
        click.echo(render(report), err=True)
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(render(report))
