"""The default model's GGUF is converted once; later starts load the cached conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamd.cache.decode_weights import lowbit_state
from streamd.daemon.engine import weight_cache
from streamd.daemon.engine.loading import LoadedModel, load_model


def _logits(loaded: LoadedModel) -> torch.Tensor:
    ids = loaded.encode("Feb 25 14:34:10 belka sshd[31602]: Failed password", allow_special=False)
    with torch.inference_mode():
        return loaded.model(torch.tensor([ids])).logits


@pytest.mark.slow
def test_a_second_load_uses_the_converted_weights_and_gives_the_same_logits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(weight_cache.CACHE_ENV, str(tmp_path))
    first = load_model("default", device="cpu")
    (entry,) = [e for e in (tmp_path / "models").iterdir() if not e.name.endswith("-int4")]
    assert (entry / weight_cache.MANIFEST).is_file() and (entry / "model.safetensors").is_file()
    int4 = entry.with_name(f"{entry.name}-int4")  # the decode step's copies, where auto picks them
    assert (int4 / weight_cache.TENSORS_FILE).is_file() == (first.decode_weights == "int4")
    second = load_model("default", device="cpu")
    made, restored = lowbit_state(first.model), lowbit_state(second.model)
    assert made.keys() == restored.keys()
    assert all(torch.equal(made[name], restored[name]) for name in made)
    assert Path(second.model.config._name_or_path) == entry  # read from the entry, not the GGUF
    assert second.name == first.name and second.stop_ids() == first.stop_ids()
    text = "a line <|im_start|> with a special token"
    assert second.encode(text, allow_special=False) == first.encode(text, allow_special=False)
    assert torch.equal(_logits(first), _logits(second))


def test_a_damaged_entry_is_removed_never_used(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(weight_cache.CACHE_ENV, str(tmp_path))
    fresh = load_model(str(tiny_model_dir), device="cpu")  # as loaded: the shared one is fused
    entry = weight_cache.store("k1", fresh.model, fresh.tokenizer)
    assert entry is not None and weight_cache.usable_entry("k1") == entry
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights: same size, same header
    weights.write_bytes(bytes(data))
    assert weight_cache.usable_entry("k1") is None
    assert not entry.exists()
    assert weight_cache.usable_entry("another key") is None  # nothing there: nothing to use


def test_an_unwritable_cache_or_an_unsavable_model_costs_only_the_speed_up(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(weight_cache.CACHE_ENV, str(blocker))
    fresh = load_model(str(tiny_model_dir), device="cpu")
    assert weight_cache.store("k2", fresh.model, fresh.tokenizer) is None
    assert blocker.read_text() == "not a folder"
    # A model whose weights share storage (the decode step's fused views) is not saved.
    monkeypatch.setenv(weight_cache.CACHE_ENV, str(tmp_path / "cache"))
    model = fresh.model
    layer = model.model.layers[0].self_attn
    both = torch.cat([layer.q_proj.weight.data, layer.k_proj.weight.data])
    layer.q_proj.weight.data = both[: layer.q_proj.weight.shape[0]]
    assert weight_cache.store("k3", model, fresh.tokenizer) is None
    assert weight_cache.usable_entry("k3") is None


def test_saved_tensors_come_back_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default model's int4 decode copies are kept this way: a damaged entry is
    removed (the next start makes them anew), never loaded."""
    monkeypatch.setenv(weight_cache.CACHE_ENV, str(tmp_path))
    tensors = {"0.qkv.packed": torch.arange(64, dtype=torch.uint8), "head.scale": torch.ones(3)}
    entry = weight_cache.store_tensors("k3", tensors)
    assert entry is not None
    loaded = weight_cache.load_tensors("k3")
    assert loaded is not None and loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)
    data = entry / weight_cache.TENSORS_FILE
    damaged = bytearray(data.read_bytes())
    damaged[-5] ^= 0x10
    data.write_bytes(bytes(damaged))
    assert weight_cache.load_tensors("k3") is None
    assert not entry.exists()
