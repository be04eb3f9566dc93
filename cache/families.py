"""Which model families the ring cache can drive, per layer what it needs of each (RoPE
frequencies, sliding windows), and why the others are refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads only where a model is: `streamd models` reads this without it
    import torch


class UnsupportedModel(ValueError):
    """A model whose positions streamd cannot shift; the message says why."""


@dataclass(frozen=True)
class Family:
    name: str  # what people call it
    fused: bool  # the GPU decode step fuses its layers (cache/fused.py)
    note: str  # what the family needs of the ring, or why it runs its own forward


# model_type -> family. Every one applies RoPE to q and k with the rotate-half convention,
# so a cached key can be moved to another position by rotating it.
FAMILIES: dict[str, Family] = {
    "llama": Family("Llama 2 / 3.x, SmolLM2", True, "plain rotary"),
    "mistral": Family("Mistral", True, "plain rotary; sliding window per layer"),
    "qwen2": Family("Qwen2 / 2.5", True, "plain rotary, q/k/v bias"),
    "qwen3": Family("Qwen3", True, "q/k RMSNorm per head before RoPE (in the fused step)"),
    "olmo2": Family(
        "OLMo 2", False, "norms after attention and MLP, q/k norm over all heads: own forward"
    ),
    "granite": Family(
        "Granite 3", False, "embedding/residual/attention/logit multipliers: own forward"
    ),
    "phi3": Family("Phi-3 / Phi-3.5 mini", False, "qkv and gate_up fused in the checkpoint"),
    "gemma3_text": Family(
        "Gemma 3 (text)",
        False,
        "local (sliding) and global layers with their own RoPE bases, scaled embeddings, "
        "(1 + w) norms: own forward",
    ),
}

# model_type -> why it is refused (the families people ask about most).
REFUSED: dict[str, str] = {
    "gpt2": "learned absolute positions, no rotary",
    "bloom": "ALiBi positions",
    "mpt": "ALiBi positions",
    "falcon": "ALiBi or rotary per checkpoint; not checked",
    "qwen2_vl": "M-RoPE (multimodal rotary sections)",
    "qwen2_5_vl": "M-RoPE (multimodal rotary sections)",
    "deepseek_v2": "MLA (latent attention: the cache holds compressed keys)",
    "deepseek_v3": "MLA (latent attention: the cache holds compressed keys)",
    "llama4": "NoPE and chunked-attention layers",
    "smollm3": "NoPE layers (no positions to rotate)",
    "gemma2": "attention logit softcapping",
    "gemma3": "the multimodal wrapper: use the text model (gemma3_text)",
    "phi": "partial rotary (Phi-2): part of each key is not rotated",
}

# Why a model_type in neither table is refused.
UNKNOWN_REASON = "its positions are not known to be plain rotary"

# RoPE variants whose inverse frequencies do not depend on the sequence length;
# "dynamic" and "longrope" change them with the context, so a stored key's
# rotation would no longer match a query's.
SUPPORTED_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})
REFUSED_ROPE_TYPES = ("dynamic", "longrope")
ROPE_REFUSAL = (
    "the frequencies change with the context length, so a key rotated once would not "
    "match later queries"
)


def rope_parameters(config: Any) -> list[dict[str, Any]]:
    """The RoPE settings of every layer type (Gemma 3 has one per type)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not params:
        return [{}]
    nested = [value for value in params.values() if isinstance(value, dict)]
    return nested or [params]


def rope_types(config: Any) -> set[str]:
    return {str(p.get("rope_type", p.get("type", "default"))) for p in rope_parameters(config)}


def check_supported(config: Any) -> None:
    """Refuse, with the reason and the supported families, a model the ring cannot drive."""
    model_type = getattr(config, "model_type", "?")
    if model_type not in FAMILIES:
        why = REFUSED.get(model_type, UNKNOWN_REASON)
        raise UnsupportedModel(
            f"model type {model_type!r} is not supported ({why}): streamd re-places cached "
            "keys by rotating them, which needs plain rotary positions (RoPE on q and k). "
            f"Supported: {', '.join(sorted(FAMILIES))} (`streamd models` says more)."
        )
    unsupported = sorted(rope_types(config) - SUPPORTED_ROPE_TYPES)
    if unsupported:
        raise UnsupportedModel(
            f"RoPE type {unsupported[0]!r} is not supported: {ROPE_REFUSAL}. Supported: "
            f"{', '.join(sorted(SUPPORTED_ROPE_TYPES))}."
        )
    partial = [p.get("partial_rotary_factor", 1.0) for p in rope_parameters(config)]
    partial.append(getattr(config, "partial_rotary_factor", None) or 1.0)
    if min(partial) < 1.0:
        raise UnsupportedModel(
            f"partial rotary (partial_rotary_factor {min(partial)}) is not supported: part "
            "of each key is not rotated, which the ring's key rotation does not model yet."
        )
    if getattr(config, "attn_logit_softcapping", None):
        raise UnsupportedModel("attention logit softcapping is not supported by streamd_sdpa.")


def layer_types(config: Any) -> list[str]:
    """Per layer: "full_attention" or "sliding_attention"."""
    layers = int(config.num_hidden_layers)
    declared = getattr(config, "layer_types", None)
    if declared:
        return [str(kind) for kind in declared]
    # Mistral and Phi-3 slide every layer when a window is set.
    sliding = getattr(config, "sliding_window", None) and config.model_type in ("mistral", "phi3")
    return ["sliding_attention" if sliding else "full_attention"] * layers


def sliding_window(config: Any) -> int | None:
    """The window of the model's sliding layers (keys a query may see, itself included);
    None where every layer attends globally."""
    if "sliding_attention" not in layer_types(config):
        return None
    return int(config.sliding_window)


def layer_inv_freq(model: torch.nn.Module) -> torch.Tensor:
    """The model's own inverse frequencies per layer, [layers, D/2] fp32 (already scaled
    for linear/llama3/yarn; Gemma 3's local and global layers have different bases)."""
    config: Any = model.config
    inner = getattr(model, "model", model)
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is None:
        raise UnsupportedModel(f"{type(model).__name__} has no rotary_emb to rotate keys with")
    kinds = layer_types(config)
    rows = [_inv_freq_of(rotary, kind) for kind in kinds]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if any(2 * row.shape[0] != head_dim for row in rows):
        raise UnsupportedModel(
            f"the rotary tables cover {2 * rows[0].shape[0]} of {head_dim} key dimensions: "
            "partial rotary is not supported"
        )
    import torch

    return torch.stack(rows).detach().to(torch.float32)


def _inv_freq_of(rotary: Any, kind: str) -> torch.Tensor:
    table = getattr(rotary, f"{kind}_inv_freq", None)
    if table is None:
        table = getattr(rotary, "inv_freq", None)
    if table is None:
        raise UnsupportedModel(f"{type(rotary).__name__} has no inverse frequencies for {kind}")
    return table


def local_model_refusal(name: str) -> str | None:
    """Why the config.json of `name` (a local model directory, or a Hugging Face id in the
    local cache) names a model streamd refuses; None where it is supported or there is no
    readable config.json (the loader then says what is wrong). Reads the JSON only: no
    torch, no transformers."""
    path = _config_file(name)
    if path is None:
        return None
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(settings, dict):
        return None
    try:
        check_supported(SimpleNamespace(**settings))
    except UnsupportedModel as refused:
        return str(refused)
    return None


def _config_file(name: str) -> Path | None:
    local = Path(name).expanduser() / "config.json"
    if local.is_file():
        return local
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:  # an id such as Qwen/Qwen3-8B: its config.json, if the local cache holds it
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(name, "config.json")
    return Path(cached) if isinstance(cached, str) else None
