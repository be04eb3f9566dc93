"""The options of `streamd eval --breakdown` and the run behind them (daemon/tools/cli.py
keeps the plain eval)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..cli_options import or_exit, progress

F = TypeVar("F", bound=Callable[..., Any])


class IntList(click.ParamType):
    """A comma-separated list of whole numbers, each at least `low`: "256,1024"."""

    name = "N,N,..."

    def __init__(self, low: int) -> None:
        self.low = low

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of whole numbers", param, ctx)
        if min(numbers) < self.low:
            self.fail(f"{value!r}: every value must be at least {self.low}", param, ctx)
        return numbers


def breakdown_options(command: F) -> F:
    """--breakdown and the grid it runs over (ignored without --breakdown)."""
    options = [
        click.option(
            "--breakdown",
            is_flag=True,
            help="Split the sinks policy's loss against the recompute oracle by the target's "
            "stream position, its chunk offset and its distance from a rebase, over a grid "
            "of max_capacity x pinned tokens x chunk (the options below; --max-capacity, "
            "--sinks and --chunk are then replaced by them).",
        ),
        click.option(
            "--windows",
            type=IntList(2),
            default="256,1024,2048,4096",
            show_default=True,
            help="With --breakdown: the max_capacity values.",
        ),
        click.option(
            "--sinks-grid",
            type=IntList(0),
            default="4,16",
            show_default=True,
            help="With --breakdown: pinned first tokens to try.",
        ),
        click.option(
            "--chunks",
            type=IntList(1),
            default="256",
            show_default=True,
            help="With --breakdown: prefill chunks to try (small ones are slow).",
        ),
        click.option(
            "--placements",
            type=click.Choice(["before-window", "fixed"]),
            multiple=True,
            help="With --breakdown: where the pinned keys sit (repeatable; default "
            "before-window, streamd's: just before the oldest visible token).",
        ),
        click.option(
            "--prompt",
            is_flag=True,
            help="With --breakdown: stream the daemon's pinned prompt (system prompt and chat "
            "header) before the text, as the daemon does, and try pinning all of it.",
        ),
        click.option(
            "--rebase-every",
            type=click.IntRange(min=1),
            default=2**15,
            show_default=True,
            help="With --breakdown: positions past the base before the ring rebases.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def run_breakdown(
    *,
    model: str,
    device: str,
    text_path: Path | None,
    tokens: int,
    samples: int,
    block: int,
    seed: int,
    as_json: bool,
    grid: dict[str, Any],
) -> None:
    """Load the model, stream the text under every variant of `grid`, print the table."""
    from ..engine.loading import load_model
    from .breakdown import BreakdownOptions, breakdown, render_breakdown
    from .eval_text import read_text_tokens

    options = or_exit(
        lambda: BreakdownOptions(
            windows=grid["windows"],
            sinks=grid["sinks_grid"],
            chunks=grid["chunks"],
            placements=grid["placements"] or ("before-window",),
            samples=samples,
            block=block,
            seed=seed,
            rebase_threshold=grid["rebase_every"],
        )
    )
    progress(f"loading {model}...")
    loaded = or_exit(lambda: load_model(model, device))
    text_ids = or_exit(lambda: read_text_tokens(loaded.tokenizer, text_path, tokens))
    ids, prefix_tokens = stream_ids(loaded, text_ids, with_prompt=grid["prompt"])
    report = breakdown(loaded.model, ids, prefix_tokens, options, loaded.name, progress)
    click.echo(json.dumps(report.as_json()) if as_json else render_breakdown(report))


def stream_ids(loaded: Any, text_ids: list[int], *, with_prompt: bool) -> tuple[Any, int]:
    """The ids to stream ([N] on the model's device): the daemon's pinned prompt first if
    asked, then the text; and how many of them are the prompt's."""
    import torch

    from ..engine.prompts import build_framing

    prompt = build_framing(loaded.tokenizer).prefix if with_prompt else ""
    prefix_ids = loaded.encode(prompt, allow_special=True) if prompt else []
    return torch.tensor(prefix_ids + text_ids, device=loaded.device), len(prefix_ids)
