"""The `streamd models` command: the families streamd drives and refuses, read from
cache/families.py (no torch), and a check of one local model directory's config.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from streamd.cache.families import (
    FAMILIES,
    REFUSED,
    REFUSED_ROPE_TYPES,
    ROPE_REFUSAL,
    SUPPORTED_ROPE_TYPES,
    UNKNOWN_REASON,
    Family,
    UnsupportedModel,
    check_supported,
)

from ..cli_options import fail

CHECK_HINT = "streamd models --check PATH"
ALSO_REFUSED = "partial rotary (partial_rotary_factor < 1) and attention logit softcapping"


def decode_path(family: Family) -> str:
    return "fused on a GPU" if family.fused else "own forward"


def listing() -> dict[str, Any]:
    """Everything the table shows, as plain data (--json)."""
    return {
        "supported": [
            {
                "model_type": model_type,
                "family": family.name,
                "decode": decode_path(family),
                "fused": family.fused,
                "note": family.note,
            }
            for model_type, family in FAMILIES.items()
        ],
        "rope_types": {
            "accepted": sorted(SUPPORTED_ROPE_TYPES),
            "refused": list(REFUSED_ROPE_TYPES),
            "why_refused": ROPE_REFUSAL,
        },
        "also_refused": ALSO_REFUSED,
        "refused": [{"model_type": kind, "reason": why} for kind, why in REFUSED.items()],
        "unknown": UNKNOWN_REASON,
        "check": CHECK_HINT,
    }


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def render(data: dict[str, Any]) -> str:
    supported = [["model_type", "family", "decode", "note"]]
    supported += [[f["model_type"], f["family"], f["decode"], f["note"]] for f in data["supported"]]
    refused = [["model_type", "reason"]]
    refused += [[r["model_type"], r["reason"]] for r in data["refused"]]
    rope = data["rope_types"]
    return "\n".join([
        "Supported (the model_type in a model's config.json):",
        *_columns(supported),
        "(fused: the GPU decode step runs the layers itself, cache/fused.py; on a CPU, and for",
        " the others, each token decodes through the model's own forward.)",
        "",
        f"RoPE types (rope_type in config.json): {', '.join(rope['accepted'])} accepted;",
        f"  {', '.join(rope['refused'])} refused: {rope['why_refused']}.",
        f"Refused in any family: {data['also_refused']}.",
        "",
        "Refused families:",
        *_columns(refused),
        f"Any other model_type is refused: {data['unknown']}.",
        "",
        f"Check a local model directory (reads its config.json only, no weights): {CHECK_HINT}",
    ])  # fmt: skip


def check(path: Path) -> dict[str, Any]:
    """The verdict on one model directory's config; exits 2 where there is no config."""
    if not (path / "config.json").is_file():
        where = "has no config.json" if path.is_dir() else "is not a directory"
        where = where if path.exists() else "does not exist"
        fail(
            f"{path} {where}: give a local model directory with its config.json "
            "(e.g. `huggingface-cli download ORG/NAME --local-dir DIR`, then copy DIR over)",
            "streamd models",
        )
    from transformers import AutoConfig  # brings torch: seconds, so after the path check

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        fail(
            f"cannot read {path / 'config.json'}: {error} (fix it, or download the model again)",
            "streamd models",
        )
    model_type = str(getattr(config, "model_type", "?"))
    verdict: dict[str, Any] = {"path": str(path), "model_type": model_type}
    try:
        check_supported(config)
    except UnsupportedModel as refused:
        return verdict | {"supported": False, "reason": str(refused)}
    family = FAMILIES[model_type]
    return verdict | {"supported": True, "family": family.name, "decode": decode_path(family)}


@click.command()
@click.option(
    "--check",
    "check_path",
    metavar="PATH",
    type=click.Path(path_type=Path),
    help="Check one local model directory: reads its config.json only (no weights). "
    "Exit 0 supported, 1 refused (with the reason), 2 no readable config.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs, not text.")
def models(check_path: Path | None, as_json: bool) -> None:
    """List the model families streamd can run, and those it refuses and why.

    streamd keeps a model's cache at constant memory by moving cached keys to
    new positions, which works for plain rotary positions (RoPE on q and k)
    only. The table says per config.json model_type whether the family runs,
    how it decodes (fused step on a GPU, or the model's own forward) and what
    it needs; --check asks the same of a model directory before you download
    its weights or start a daemon with it.

    \b
      streamd models
      streamd models --json | jq -r '.supported[].model_type'
      streamd models --check /srv/models/Qwen2.5-7B-Instruct
    """
    if check_path is None:
        data = listing()
        click.echo(json.dumps(data, indent=2) if as_json else render(data))
        return
    verdict = check(check_path)
    if as_json:
        click.echo(json.dumps(verdict, indent=2))
    elif verdict["supported"]:
        click.echo(f"supported: {verdict['family']} ({verdict['decode']})")
    else:
        click.echo(f"refused: {verdict['reason']}")
    sys.exit(0 if verdict["supported"] else 1)
