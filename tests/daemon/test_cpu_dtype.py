"""`--dtype auto` on a CPU: bf16 where the CPU computes in bf16 natively (AVX512-BF16 or
AMX, read from /proc/cpuinfo's flags), fp32 elsewhere (torch emulates bf16 there, slower
than fp32); a GPU always gets bf16 and an explicit dtype always wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from streamd.daemon.engine.cpu_memory import bound_cpu_memory
from streamd.daemon.engine.loading import (
    ModelLoadError,
    cpu_has_native_bf16,
    resolve_decode_weights,
    resolve_dtype,
)

ZEN4 = "flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 vaes\n"
SKYLAKE = "flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_vnni vaes\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (SKYLAKE, False), ("processor\t: 0\n", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, cpuinfo: str, native: bool) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: some CPU\n" + cpuinfo)
    assert cpu_has_native_bf16(path) is native


def test_without_proc_the_cpu_is_taken_as_without_native_bf16(tmp_path: Path) -> None:
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_auto_follows_the_cpu_and_an_explicit_dtype_wins() -> None:
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", cpu) == expected
    assert resolve_dtype("float32", cpu) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(
        ModelLoadError, match="dtype 'fp8': use auto, int4, float32, float16, bfloat16"
    ):
        resolve_dtype("fp8", cpu)


def test_auto_on_a_cpu_with_native_bf16_decodes_with_int4_copies() -> None:
    """int4 computes in bf16 and only the decode step reads int4 weights (ingest keeps
    oneDNN's bf16 matmuls); it is a CPU path, refused on a GPU with the fix named."""
    cpu = torch.device("cpu")
    native = cpu_has_native_bf16()
    assert resolve_decode_weights("auto", cpu) == ("int4" if native else "model")
    assert resolve_decode_weights("float32", cpu) == "model"
    assert resolve_decode_weights("bfloat16", cpu) == "model"
    assert resolve_decode_weights("auto", torch.device("cuda")) == "model"
    assert resolve_dtype("int4", cpu) == torch.bfloat16
    with pytest.raises(ModelLoadError, match=r"int4 is a CPU path .* use auto or bfloat16"):
        resolve_decode_weights("int4", torch.device("cuda"))


def test_onednn_caches_few_primitives_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of every size would fill oneDNN's default cache of 1024 primitives (the
    daemon's RSS grew ~430 MB in 10 minutes); an operator's own setting wins."""
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    bound_cpu_memory()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    bound_cpu_memory()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
