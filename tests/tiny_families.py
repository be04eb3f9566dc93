"""Tiny random models of every supported family, built from each family's real config class.

Weights are drawn wider than the families' defaults (initializer_range 0.2) so that logits
differ clearly between positions: an equivalence test on near-uniform logits would pass
whatever the cache did.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 256
COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "initializer_range": 0.2,
    "tie_word_embeddings": True,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
SLIDING_WINDOW = 8  # Gemma 3's local layers, in the tiny models


def _config(family: str, layers: int, kinds: list[str] | None) -> Any:
    import transformers as hf

    if family == "llama":
        return hf.LlamaConfig(num_hidden_layers=layers, rope_theta=10000.0, **COMMON)
    if family == "qwen3":
        return hf.Qwen3Config(num_hidden_layers=layers, head_dim=16, **COMMON)
    if family == "olmo2":
        return hf.Olmo2Config(num_hidden_layers=layers, **COMMON)
    if family == "granite":
        multipliers = {"embedding_multiplier": 4.0, "residual_multiplier": 0.5}
        scales = {"attention_multiplier": 0.2, "logits_scaling": 2.0}
        return hf.GraniteConfig(num_hidden_layers=layers, **multipliers, **scales, **COMMON)
    if family == "phi3":
        return hf.Phi3Config(num_hidden_layers=layers, **COMMON)
    if family == "gemma3_text":
        kinds = kinds or (["sliding_attention", "full_attention"] * layers)[:layers]
        return hf.Gemma3TextConfig(
            num_hidden_layers=layers,
            head_dim=16,
            sliding_window=SLIDING_WINDOW,
            layer_types=kinds,
            query_pre_attn_scalar=16,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            },
            **COMMON,
        )
    raise ValueError(f"no tiny model for {family!r}")


FAMILIES = ("llama", "qwen3", "olmo2", "granite", "phi3", "gemma3_text")


def tiny_family_model(
    family: str,
    *,
    layers: int = 2,
    kinds: list[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """(model to drive through the ring, its twin with the same weights on eager attention:
    the family's own forward, untouched by streamd), fp32 on `device`."""
    from transformers import AutoModelForCausalLM

    config = _config(family, layers, kinds)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    twin_config = _config(family, layers, kinds)
    twin_config._attn_implementation = "eager"
    twin = AutoModelForCausalLM.from_config(twin_config, dtype=torch.float32).eval()
    twin.load_state_dict(model.state_dict())
    return model.to(device), twin.to(device)
