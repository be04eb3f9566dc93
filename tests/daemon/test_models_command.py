"""`streamd models`: the families from cache/families.py, as a table and JSON, without
torch; --check on a model directory's config.json alone (exit 0, 1 or 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from transformers import GPT2Config, Qwen3Config

from streamd.cache.families import FAMILIES, REFUSED
from streamd.daemon import cli as cli_module
from streamd.daemon.tools.testing import clean_env
from tests.daemon.daemon_testing import cli


def test_the_table_lists_every_family_and_the_refused_with_their_reasons() -> None:
    done = cli("models")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for model_type, family in FAMILIES.items():
        assert family.name in rows[model_type] and family.note in rows[model_type]
        assert ("fused on a GPU" in rows[model_type]) == family.fused
    assert REFUSED["gpt2"] in rows["gpt2"]
    assert "dynamic, longrope refused" in done.stdout
    assert "streamd models --check PATH" in done.stdout


def test_json_has_the_same_families() -> None:
    done = cli("models", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [row["model_type"] for row in data["supported"]] == list(FAMILIES)
    assert {row["model_type"]: row["reason"] for row in data["refused"]} == REFUSED
    assert "yarn" in data["rope_types"]["accepted"]


def test_the_listing_loads_no_torch() -> None:
    code = (
        "import sys\n"
        "from streamd.daemon.cli import main\n"
        "main(['models', '--json'], standalone_mode=False)\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False False"


def test_check_a_supported_model_directory(tmp_path: Path) -> None:
    Qwen3Config(hidden_size=64, num_attention_heads=4, num_hidden_layers=2).save_pretrained(
        tmp_path
    )
    done = cli("models", "--check", str(tmp_path))
    assert (done.returncode, done.stdout) == (0, "supported: Qwen3 (fused on a GPU)\n")


def test_check_an_unreadable_config_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    # In process: a subprocess would spend seconds importing transformers for the same line.
    done = CliRunner().invoke(cli_module.main, ["models", "--check", str(tmp_path)])
    assert done.exit_code == 2
    assert done.stderr.startswith(f"streamd models: cannot read {tmp_path / 'config.json'}")


def test_check_a_refused_model_directory_says_why(tmp_path: Path) -> None:
    GPT2Config(n_embd=64, n_layer=2, n_head=4).save_pretrained(tmp_path)
    done = cli("models", "--check", str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.startswith(
        "refused: model type 'gpt2' is not supported (learned absolute positions, no rotary)"
    )


def test_check_without_a_config_exits_2_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    done = cli("models", "--check", str(missing))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"streamd models: {missing} does not exist: give a local")


def test_the_daemon_refuses_a_local_model_of_a_refused_family_before_loading_anything(
    tmp_path: Path,
) -> None:
    """`streamd run` reads the directory's config.json with the other settings: exit 2 with
    the reason and the supported families, no model (nor torch) loaded first."""
    GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64).save_pretrained(tmp_path)
    done = cli("run", "--model", str(tmp_path), "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert f"model.name = '{tmp_path}': model type 'gpt2' is not supported" in done.stderr
    assert "Supported: gemma3_text, granite, llama, mistral, olmo2, phi3, qwen2, qwen3" in (
        done.stderr
    )
    assert '"event": "starting"' not in done.stderr  # refused with the settings, before it


def test_a_cached_hub_model_of_a_refused_family_is_refused_the_same_way(tmp_path: Path) -> None:
    """An id such as org/name whose config.json is in the local Hugging Face cache."""
    snapshot = tmp_path / "hub" / "models--acme--old-gpt" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64).save_pretrained(snapshot)
    refs = tmp_path / "hub" / "models--acme--old-gpt" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    env = clean_env(HF_HUB_CACHE=str(tmp_path / "hub"))
    done = cli("run", "--model", "acme/old-gpt", "--device", "cpu", env=env)
    assert done.returncode == 2, done.stderr
    assert "model.name = 'acme/old-gpt': model type 'gpt2' is not supported" in done.stderr
