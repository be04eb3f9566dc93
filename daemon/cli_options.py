"""Click options that several commands share, each declared once with one default (the
daemon's own), and the helpers every command uses to fail with one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from .config import CacheConfig
from .config.rules import CAPACITY_RANGE, DEFAULT_MODEL, DTYPE_CHOICES

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# (flag, options field, click type, help): a tool's options declared as a table, each
# default read from the tool's options dataclass (which checks the bounds, naming the flag).
OptionRow = tuple[str, str, Any, str]

# The daemon's own defaults.
MAX_CAPACITY = CacheConfig().max_capacity
CHUNK = CacheConfig().chunk


def model_option(command: F) -> F:
    return click.option(
        "--model",
        default=DEFAULT_MODEL,
        help="'default' (the embedded SmolLM2-135M), a local model directory or a Hugging Face "
        "id in the local cache.",
    )(command)


def device_option(command: F) -> F:
    return click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")(command)


def dtype_option(command: F) -> F:
    return click.option(
        "--dtype",
        type=click.Choice(DTYPE_CHOICES),
        default="auto",
        help="auto (a CPU with native bf16: int4; a GPU: bfloat16; else float32), int4 "
        "(bf16, and int4 copies of the weights for writing summaries: a CPU decodes ~2.5x "
        "faster), float32, float16 or bfloat16.",
    )(command)


def max_capacity_option(command: F) -> F:
    return click.option(
        "--max-capacity",
        type=click.IntRange(*CAPACITY_RANGE),  # the bounds the config and the session check
        default=MAX_CAPACITY,
        help="Tokens the model sees: pinned prefix + sliding window.",
    )(command)


def chunk_option(command: F) -> F:
    return click.option(
        "--chunk", type=click.IntRange(min=1), default=CHUNK, help="Prefill chunk, tokens."
    )(command)


def refresh_option(command: F) -> F:
    return click.option(
        "--refresh",
        default=CacheConfig().refresh,
        show_default=True,
        help="How often the window is recomputed from its own tokens: auto (twice per "
        "window streamed; on a CPU only where max_capacity <= 512), off, or every N "
        "stream tokens.",
    )(command)


def session_options(command: F) -> F:
    """--model, --device and --max-capacity: what a command that runs a session takes."""
    return model_option(device_option(max_capacity_option(command)))


def option_table(rows: tuple[OptionRow, ...], defaults: object, command: F) -> F:
    """The rows' options on `command`, in the rows' order in --help, with the defaults of
    `defaults` (an instance of the tool's options dataclass)."""
    for flag, field, kind, text in reversed(rows):
        default = getattr(defaults, field)
        command = click.option(flag, field, type=kind, default=default, help=text)(command)
    return command


def daemon_arg_option(command: F) -> F:
    """--daemon-arg ARG (repeatable): one more `streamd run` argument for a tool's daemon."""
    return click.option(
        "--daemon-arg",
        "daemon_args",
        multiple=True,
        metavar="ARG",
        help="One more `streamd run` argument (repeatable): --daemon-arg=--chunk=64.",
    )(command)


def progress(message: str) -> None:
    click.echo(message, err=True)


def fail(message: str, command: str = "streamd") -> NoReturn:
    click.echo(f"{command}: {message}", err=True)
    sys.exit(2)


def or_exit(make: Callable[[], T]) -> T:
    """Run `make`; a ValueError/RuntimeError of ours becomes one clear line and exit 2."""
    try:
        return make()
    except (ValueError, RuntimeError) as error:
        fail(str(error))
