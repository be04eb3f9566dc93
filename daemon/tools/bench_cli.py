"""Options -> model, tokens and report for `streamd bench` (kept out of cli.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
import torch

from streamd.cache.fused import fusion_unsupported
from streamd.cache.layout import LayoutError, parse_refresh

from ..config.rules import DEFAULT_MODEL
from ..engine.loading import (
    DEFAULT_GGUF_FILE,
    INT4,
    LoadedModel,
    ModelLoadError,
    default_gguf_dir,
    load_model,
    resolve_decode_weights,
    resolve_device,
    resolve_dtype,
)
from .bench.llama_cpp import llama_bench_command, run_llama_bench
from .bench.models import BenchModels, random_model
from .bench.options import (
    CPU_SCALING,
    CPU_STREAM_CAPACITY,
    GPU_SCALING,
    GPU_STREAM_CAPACITY,
    BenchOptions,
    Progress,
)
from .bench.report import BenchReport, render
from .bench.runner import run_bench
from .eval_text import EvalError, read_text_tokens

Fail = Callable[[str], NoReturn]


@dataclass(frozen=True)
class _Load:
    """How to load the models: --device, --dtype, --threads, and the tokens needed."""

    device: str
    dtype: str
    threads: int
    tokens: int


def _scaling(text: str, fail: Fail) -> tuple[int, ...]:
    try:
        values = tuple(sorted(int(v) for v in text.split(",") if v.strip()))
    except ValueError:
        fail(f"--scaling {text!r}: give stream lengths as integers, e.g. 10000,100000,1000000")
    if not values or values[0] < 1000:
        fail(f"--scaling {text!r}: lengths must be >= 1000")
    return values


def _real_models(
    model: str, text_path: Path | None, settings: _Load, progress: Progress
) -> tuple[BenchModels, torch.Tensor]:
    """The model streamd runs, and on a CPU, where that is not float32, a float32 copy for
    the HF dense baseline (the fp32 baseline the CPU comparison is against)."""
    loaded = load_model(model, settings.device, settings.dtype, settings.threads)
    ids = read_text_tokens(loaded.tokenizer, text_path, max(settings.tokens, 8192))
    baseline = loaded
    if loaded.device.type == "cpu" and loaded.dtype != torch.float32:
        progress("loading a float32 copy of the model for the HF dense baseline...")
        baseline = load_model(model, "cpu", "float32", settings.threads)
    return BenchModels(loaded, baseline), torch.tensor(ids, device=loaded.device)


def _random_models(shape: str, settings: _Load) -> tuple[BenchModels, torch.Tensor]:
    """Random weights of a shape, one model for both sides. --dtype auto keeps the model's
    own weights for decoding; int4 asks for int4 copies where the fused step runs."""
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    where = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, where)
    weights = resolve_decode_weights(INT4, where) if settings.dtype == INT4 else "model"
    net = random_model(shape, where, dtype)
    if weights != "model" and fusion_unsupported(net) is not None:
        weights = "model"
    loaded = LoadedModel(
        model=net,
        tokenizer=None,
        name=f"random {shape}",
        device=where,
        dtype=dtype,
        decode_weights=weights,
    )
    generator = torch.Generator().manual_seed(0)
    count = max(settings.tokens, 8192)
    random_ids = torch.randint(0, net.config.vocab_size, (count,), generator=generator)
    return BenchModels(loaded, loaded, real_weights=False), random_ids.to(where)


def _check_llama_bench(
    path: Path | None, shape: str | None, model: str | None, device: str, fail: Fail
) -> None:
    if path is None:
        return
    if model != DEFAULT_MODEL:
        given = f"--shape {shape}" if shape is not None else f"--model {model}"
        fail(
            f"--llama-bench runs llama.cpp on the GGUF file --model {DEFAULT_MODEL} is loaded "
            f"from; this run has {given}: use --model {DEFAULT_MODEL}"
        )
    where = resolve_device(device)
    if where.type != "cpu":
        fail(
            f"--llama-bench compares with llama.cpp on the CPU, and --device {device} is "
            f"{where}: use --device cpu"
        )
    if not os.access(path, os.X_OK):
        fail(
            f"--llama-bench {path}: not executable; give llama.cpp's llama-bench binary "
            "(scripts/build_llama_bench.sh builds one)"
        )


def _llama_cpp(path: Path, options: BenchOptions, report: BenchReport, progress: Progress) -> None:
    """llama-bench on the default model's GGUF file, with streamd's thread count."""
    gguf = default_gguf_dir() / DEFAULT_GGUF_FILE
    command = llama_bench_command(
        path, gguf, options.prompt_tokens, options.new_tokens, report.threads, options.repeats
    )
    progress(f"llama.cpp: {' '.join(command)}")
    report.llama_cpp = run_llama_bench(command)
    if report.llama_cpp.error is not None:
        progress(f"llama.cpp: not measured: {report.llama_cpp.error}")


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
    memory = "process RSS (MB)" if report.device == "cpu" else "GPU memory allocated (MB)"
    for ax, label in ((mem_ax, memory), (rate_ax, "ingest rate (tok/s)")):
        ax.set_xscale("log")
        ax.set_xlabel("stream length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"{report.model} on {report.device}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _options(numbers: dict[str, Any], scaling: str | None, cpu: bool, fail: Fail) -> BenchOptions:
    """The options, with --scaling and --stream-capacity defaulting to the device's."""
    try:
        parse_refresh(numbers["refresh"])
    except LayoutError as error:
        fail(f"--refresh: {error}")
    stream_capacity = numbers["stream_capacity"]
    if stream_capacity is None:
        stream_capacity = CPU_STREAM_CAPACITY if cpu else GPU_STREAM_CAPACITY
    return BenchOptions(
        scaling=_scaling(scaling or (CPU_SCALING if cpu else GPU_SCALING), fail),
        prompt_tokens=numbers["prompt_tokens"],
        new_tokens=numbers["new_tokens"],
        max_capacity=numbers["max_capacity"],
        stream_capacity=stream_capacity,
        chunk=numbers["chunk"],
        baseline_budget_s=numbers["baseline_budget"],
        compile=numbers["compile"],
        refresh=numbers["refresh"],
    )


def run_bench_command(
    *,
    shape: str | None,
    model: str | None,
    text_path: Path | None,
    device: str,
    dtype: str,
    threads: int,
    llama_bench: Path | None,
    as_json: bool,
    plot: Path | None,
    progress: Progress,
    fail: Fail,
    scaling: str | None,
    **numbers: Any,
) -> None:
    if (shape is None) == (model is None):
        fail("give exactly one of --shape NAME (random weights) or --model NAME (real weights)")
    try:
        _check_llama_bench(llama_bench, shape, model, device, fail)
        cpu = resolve_device(device).type == "cpu"
        options = _options(numbers, scaling, cpu, fail)
        progress(f"loading {model or shape}...")
        settings = _Load(device, dtype, threads, options.prompt_tokens)
        models, ids = (
            _real_models(model, text_path, settings, progress)
            if model is not None
            else _random_models(str(shape), settings)
        )
    except (ModelLoadError, EvalError) as error:
        fail(str(error))
    report = run_bench(models, ids, options, progress)
    if llama_bench is not None:
        _llama_cpp(llama_bench, options, report, progress)
    if plot is not None:
        write_plot(report, plot)
    if as_json:
        click.echo(render(report), err=True)
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(render(report))
