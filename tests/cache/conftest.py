from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> torch.nn.Module:
    """The tiny random Llama in fp32 on the CPU (2 layers, 4 heads, 2 KV heads, head_dim 16)."""
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
