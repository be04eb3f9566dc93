from __future__ import annotations

from pathlib import Path

import pytest

from streamd.daemon.engine.loading import LoadedModel, load_model


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def default_loaded() -> LoadedModel:
    """The real embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF), CPU fp32."""
    return load_model("default", device="cpu")
