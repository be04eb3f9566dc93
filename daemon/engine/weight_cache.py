"""The default model converted once: its GGUF dequantized into a model directory under the
cache directory, so that a restart loads in about a second instead of half a minute.

An entry is keyed by the GGUF's SHA-256 and the torch and transformers versions. It is built
in a temporary folder and renamed into place; its manifest, written last, holds each file's
size and CRC-32, checked at every load. An entry that fails the check is removed and rebuilt,
never used. A cache that cannot be written costs only the speed-up (logged).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from streamd.connectors.durable import fsync_directory

log = structlog.get_logger(__name__)

MANIFEST = "streamd-manifest.json"
TENSORS_FILE = "tensors.safetensors"
_READ_BYTES = 16 * 2**20
CACHE_ENV = "STREAMD_CACHE_DIR"


def cache_root() -> Path:
    """$STREAMD_CACHE_DIR, systemd's $CACHE_DIRECTORY, $XDG_CACHE_HOME/streamd or
    ~/.cache/streamd, the first that is set."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.environ.get("CACHE_DIRECTORY"):  # CacheDirectory= in the unit; may list several
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "streamd"


def entry_key(gguf: Path) -> str:
    """What the converted weights depend on: the GGUF's bytes and the converting code."""
    import torch
    import transformers

    digest = hashlib.sha256()
    with gguf.open("rb") as file:
        while block := file.read(_READ_BYTES):
            digest.update(block)
    versions = f"torch {torch.__version__} transformers {transformers.__version__}"
    return hashlib.sha256(f"{digest.hexdigest()} {versions}".encode()).hexdigest()[:32]


def entry_dir(key: str) -> Path:
    return cache_root() / "models" / key


def usable_entry(key: str) -> Path | None:
    """The entry's folder if it is whole and every file matches its manifest; a damaged
    entry is removed (the caller rebuilds it)."""
    folder = entry_dir(key)
    if not folder.is_dir():
        return None
    problem = _check(folder, key)
    if problem is None:
        return folder
    log.warning("model cache entry damaged: rebuilding it", folder=str(folder), problem=problem)
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _check(folder: Path, key: str) -> str | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("key") != key or not isinstance(manifest.get("files"), dict):
            return "manifest does not match"
        for name, expected in manifest["files"].items():
            path = folder / name
            if path.stat().st_size != expected["size"] or _crc(path) != expected["crc32"]:
                return f"{name} differs from its manifest"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"unreadable: {error}"
    return None


def _crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as file:
        while block := file.read(_READ_BYTES):
            crc = zlib.crc32(block, crc)
    return crc


def store(key: str, model: Any, tokenizer: Any) -> Path | None:
    """Write a loaded model as an entry (atomically); None if the cache cannot be written."""
    from safetensors.torch import save_model

    def write(building: Path) -> None:
        # The GGUF-loaded config says "quantized with gguf": the weights saved here are
        # already dequantized, so the entry's config must not say so.
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(building)
        model.generation_config.save_pretrained(building)
        tokenizer.save_pretrained(building)
        save_model(model, str(building / "model.safetensors"))

    return _store_entry(key, write)


def store_tensors(key: str, tensors: dict[str, Any]) -> Path | None:
    """Write named tensors as an entry (TENSORS_FILE, atomically); None if it cannot be."""
    from safetensors.torch import save_file

    return _store_entry(key, lambda building: save_file(tensors, str(building / TENSORS_FILE)))


def load_tensors(key: str) -> dict[str, Any] | None:
    """The tensors of a whole entry written by store_tensors, else None (a damaged entry
    is removed: the caller makes them anew and stores them again)."""
    from safetensors.torch import load_file

    folder = usable_entry(key)
    if folder is None:
        return None
    try:
        return load_file(str(folder / TENSORS_FILE))
    except (OSError, ValueError, RuntimeError) as error:
        log.warning("cache entry unreadable: rebuilding it", folder=str(folder), error=str(error))
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _store_entry(key: str, write: Callable[[Path], None]) -> Path | None:
    models = cache_root() / "models"
    try:
        models.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=models))
        try:
            write(building)
            _write_manifest(building, key)
            os.replace(building, models / key)
            fsync_directory(models)  # the rename, too, survives a power cut
        finally:
            shutil.rmtree(building, ignore_errors=True)  # gone already once renamed
    except (OSError, RuntimeError, ValueError) as error:  # a full disk, a model that
        # safetensors will not save (shared storage): the load goes on without the cache
        if usable_entry(key) is not None:  # another process stored it first
            return models / key
        log.warning("model cache not written: the next start converts again", error=str(error))
        return None
    log.info("model cache entry written", folder=str(models / key))
    return models / key


def _write_manifest(folder: Path, key: str) -> None:
    files = {
        path.name: {"size": path.stat().st_size, "crc32": _crc(path)}
        for path in sorted(folder.iterdir())
        if path.is_file()
    }
    for path in folder.iterdir():
        with path.open("rb") as file:
            os.fsync(file.fileno())
    manifest = folder / MANIFEST
    manifest.write_text(json.dumps({"key": key, "files": files}), encoding="utf-8")
    with manifest.open("rb") as file:
        os.fsync(file.fileno())
