"""The `streamd eval-summaries` command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..cli_options import chunk_option, dtype_option, fail, session_options


@click.command(name="eval-summaries")
@click.argument("text_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--every-lines",
    type=click.IntRange(min=1),
    default=40,
    help="Lines streamed between two summaries.",
)
@click.option(
    "--max-batches", type=click.IntRange(min=1), default=None, help="Stop after N summaries."
)
@session_options
@dtype_option
@chunk_option
@click.option(
    "--summary-max-tokens",
    type=click.IntRange(min=1),
    default=128,
    help="Tokens the model may write per summary.",
)
@click.option(
    "--profile",
    type=click.Choice(["auto", "logs", "transcript"]),
    default="auto",
    help="What the text is: log lines, a transcript, or decided per window.",
)
@click.option(
    "--unsupported",
    type=click.Choice(["drop-sentence", "flag"]),
    default="drop-sentence",
    help="A sentence with a claim nothing supports: removed, or kept and listed.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Also run the plain path (no facts, no checks) on the same batches.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the table goes to stderr).")
def eval_summaries(
    text_file: Path,
    every_lines: int,
    max_batches: int | None,
    model: str,
    device: str,
    dtype: str,
    max_capacity: int,
    chunk: int,
    summary_max_tokens: int,
    profile: str,
    unsupported: str,
    compare: bool,
    as_json: bool,
) -> None:
    """Stream TEXT_FILE through one session, a summary after every batch of lines,
    and score the summaries.

    \b
      streamd eval-summaries /var/log/auth.log --every-lines 40 --compare
      streamd eval-summaries meeting.txt --profile transcript --json > eval.json

    Per summary and in total: claim precision (claims in the text that the
    window text or the facts support, over all checkable claims: IPs, numbers,
    names, paths, quotes, dates), top-3 pattern recall (of the window's three
    most frequent log templates, how many the text mentions), the share of
    summaries that end on a whole sentence, repeats of the summary before, and
    latency. --json adds every summary's text, the exact window text the model
    saw, its facts and its claim check.
    """
    from ..engine.session import Session, SessionConfig
    from .eval_summaries import (
        EvalSummariesError,
        EvalSummariesOptions,
        evaluate_summaries,
        read_lines,
        render_table,
        report,
    )

    def progress(message: str) -> None:
        click.echo(message, err=True)

    try:
        lines = read_lines(text_file)
        config = SessionConfig(
            model=model,
            device=device,
            dtype=dtype,
            max_capacity=max_capacity,
            chunk=chunk,
            summary_max_tokens=summary_max_tokens,
            profile=profile,
            unsupported=unsupported,
        )
        progress(f"loading {model}...")
        began = time.perf_counter()
        session = Session(config)
        progress(f"loaded {session.model_name} in {time.perf_counter() - began:.1f} s")
    except (EvalSummariesError, ValueError, RuntimeError) as error:
        fail(str(error), "streamd eval-summaries")
    options = EvalSummariesOptions(every_lines, compare, max_batches)
    grounded, plain = evaluate_summaries(session, lines, options, progress)
    table = render_table(grounded, plain)
    if not as_json:
        click.echo(table)
        return
    progress(table)
    meta = {
        "file": str(text_file),
        "model": session.model_name,
        "device": str(session.loaded.device),
        "max_capacity": max_capacity,
        "every_lines": every_lines,
        "profile": profile,
        "unsupported": unsupported,
    }
    click.echo(json.dumps(report(grounded, plain, meta), indent=1))
