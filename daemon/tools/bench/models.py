"""Models to bench: random weights of a named shape (bench/shapes.py) in its family's
real model class: speed at real sizes, no download; BenchModels: what each side runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...engine.loading import LoadedModel
from .shapes import SHAPES


def random_model(shape: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(SHAPES[shape])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def weights_bytes(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() not in seen:  # tied embeddings count once
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


@dataclass(frozen=True)
class BenchModels:
    """What each side runs. On a CPU the HF dense baseline is a float32 copy of the model
    where streamd's is not float32; elsewhere both sides run the same model."""

    streamd: LoadedModel
    baseline: LoadedModel
    real_weights: bool = True  # False for --shape (random: PPL not meaningful)

    @property
    def separate(self) -> bool:
        return self.baseline.model is not self.streamd.model
