"""Fixtures shared by every test folder: a tiny model dir, free ports, a real Mosquitto."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import make_tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama + the real SmolLM2 tokenizer, saved once per test run."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
