"""What the fused decode step multiplies by: the model's own weights, or low-bit copies.

The low-bit copies (cache/lowbit.py) are made once per model. Making them takes ~0.6 s
on a CPU (106M values grouped, rounded and packed), so they can also be saved as a flat
dict of tensors and put back at the next start (daemon/engine/weight_cache.py keeps them
beside the converted model).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .lowbit import Dense, Int4Groups, Int8Rows, Projection, int8_rows, lowbit, lowbit_unsupported

if TYPE_CHECKING:
    from .fused import FusedLayer

INT4 = "int4"
DECODE_WEIGHTS = ("model", INT4)


@dataclass(frozen=True)
class LayerProjections:
    """One layer's projections for a decode step."""

    qkv: Projection
    o: Projection
    gate_up: Projection
    down: Projection


Projections = tuple[list[LayerProjections], Projection]  # (layers, output projection)

# The low-bit copies of each model object, made (or put back) once.
_LOWBIT: weakref.WeakKeyDictionary[torch.nn.Module, Projections] = weakref.WeakKeyDictionary()
_PARTS = ("qkv", "o", "gate_up", "down")


def decode_projections(model: Any, layers: list[FusedLayer], weights: str) -> Projections:
    """layers: the model's fused layers. "model": views of their weights; "int4": int4
    groups, the output projection as int8 rows (made once per model)."""
    head = model.get_output_embeddings().weight
    if weights == "model":
        dense = [
            LayerProjections(
                Dense(f.qkv, f.qkv_bias), Dense(f.o, f.o_bias), Dense(f.gate_up), Dense(f.down)
            )
            for f in layers
        ]
        return dense, Dense(head)
    if weights != INT4:
        raise ValueError(f"decode weights {weights!r}: use one of {DECODE_WEIGHTS}")
    reason = lowbit_unsupported(head.device, head.dtype)
    if reason is not None:
        raise ValueError(f"decode weights {weights!r}: {reason}")
    if model not in _LOWBIT:
        with torch.no_grad():
            _LOWBIT[model] = (
                [_lowbit_layer(f) for f in layers],
                # The output rows are also the embedding (tied; a GGUF's Q8_0): int8 rows
                # keep each within 0.4% of its range, where int4 groups would not.
                int8_rows(head),
            )
    return _LOWBIT[model]


def _lowbit_layer(f: FusedLayer) -> LayerProjections:
    return LayerProjections(
        lowbit(f.qkv, f.qkv_bias), lowbit(f.o, f.o_bias), lowbit(f.gate_up), lowbit(f.down)
    )


def lowbit_state(model: Any) -> dict[str, torch.Tensor]:
    """The model's low-bit copies as flat tensors (to save); empty if it has none."""
    if model not in _LOWBIT:
        return {}
    layers, head = _LOWBIT[model]
    state = _projection_state("head", head)
    for index, layer in enumerate(layers):
        for part in _PARTS:
            state.update(_projection_state(f"{index}.{part}", getattr(layer, part)))
    return state


def _projection_state(name: str, projection: Projection) -> dict[str, torch.Tensor]:
    if isinstance(projection, Int4Groups):
        tensors = {"packed": projection.packed, "scale_zero": projection.scale_zero}
    elif isinstance(projection, Int8Rows):
        tensors = {"values": projection.values, "scale": projection.scale}
    else:
        raise TypeError(f"{name}: {type(projection).__name__} is not a low-bit projection")
    if projection.bias is not None:
        tensors["bias"] = projection.bias
    return {f"{name}.{key}": value for key, value in tensors.items()}


def restore_lowbit(model: Any, state: dict[str, torch.Tensor]) -> None:
    """Put back copies saved by lowbit_state, for a model of the same shapes. Raises
    ValueError where the state does not fit the model (the caller makes them anew)."""
    layers = model.model.layers
    try:
        restored = [
            LayerProjections(*(_projection(state, f"{i}.{part}") for part in _PARTS))
            for i in range(len(layers))
        ]
        head = _projection(state, "head")
    except KeyError as missing:
        raise ValueError(f"saved decode weights lack {missing}") from None
    want = model.get_output_embeddings().weight.shape
    if not isinstance(head, Int8Rows) or head.values.shape != want:
        raise ValueError("saved decode weights are of another model's shape")
    _LOWBIT[model] = (restored, head)


def _projection(state: dict[str, torch.Tensor], name: str) -> Projection:
    bias = state.get(f"{name}.bias")
    if f"{name}.packed" in state:
        return Int4Groups(state[f"{name}.packed"], state[f"{name}.scale_zero"], bias)
    return Int8Rows(state[f"{name}.values"], state[f"{name}.scale"], bias)
