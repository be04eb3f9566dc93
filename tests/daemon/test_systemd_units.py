"""The unit files and snippets in systemd/, checked by systemd's own tools where they exist."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
SYSTEMD = REPO / "systemd"
UNITS = ("streamd.service", "streamd@.service")
# Lines that legitimately differ between the single unit and the per-GPU template.
INSTANCE_KEYS = (
    "Description",
    "ExecStart",
    "StateDirectory",
    "RuntimeDirectory",
    "EnvironmentFile",
    "Environment=CUDA_VISIBLE_DEVICES",
)


def directives(unit: str) -> list[str]:
    """The unit's `Key=value` lines, comments and blank lines left out."""
    lines = (SYSTEMD / unit).read_text().splitlines()
    return [line for line in lines if line and not line.startswith(("#", ";", "["))]


def values(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in directives(unit) if line.split("=", 1)[0] == key]


def test_the_units_verify_as_install_sh_installs_them() -> None:
    """#11, observation 17: ExecStart named /usr/bin/streamd, which no install made. The
    units, installed by `install.sh --system` into a throwaway root, pass systemd-analyze
    verify there, with streamd where install.sh links /usr/local/bin/streamd to."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    done = subprocess.run(
        ["bash", str(REPO / "scripts/verify_units.sh")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_notify_watchdog_and_restart(unit: str) -> None:
    found = set(directives(unit))
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "KillMode=mixed",
        "User=streamd",
        "RuntimeDirectoryMode=0750",
        "DevicePolicy=closed",
        "DeviceAllow=char-nvidia* rw",
    ):
        assert line in found, f"{unit}: {line} missing"
    assert any(line.startswith("TimeoutStartSec=") for line in found)
    assert any(line.startswith("TimeoutStopSec=") for line in found)


@pytest.mark.parametrize("unit", UNITS)
def test_hardening_that_breaks_cuda_stays_off(unit: str) -> None:
    found = set(directives(unit))
    for line in ("NoNewPrivileges=true", "ProtectSystem=strict", "ProtectHome=true"):
        assert line in found
    keys = {line.split("=", 1)[0] for line in found}
    assert not keys & {"MemoryDenyWriteExecute", "PrivateDevices", "PrivateUsers", "ProcSubset"}
    # DeviceAllow= takes no path globs: /dev/nvidia* would silently allow nothing.
    assert all(not v.startswith("/dev/") or "*" not in v for v in values(unit, "DeviceAllow"))


@pytest.mark.parametrize("unit", UNITS)
def test_caches_point_into_the_cache_directory(unit: str) -> None:
    environment = dict(v.split("=", 1) for v in values(unit, "Environment"))
    assert environment["HF_HOME"].startswith("%C/streamd")
    assert values(unit, "CacheDirectory") == ["streamd"]


def test_template_differs_only_where_an_instance_must() -> None:
    def shared(unit: str) -> list[str]:
        return [line for line in directives(unit) if not line.startswith(INSTANCE_KEYS)]

    assert shared("streamd.service") == shared("streamd@.service")
    environment = values("streamd@.service", "Environment")
    assert "CUDA_VISIBLE_DEVICES=%i" in environment
    assert values("streamd@.service", "RuntimeDirectory") == ["streamd/%i"]
    assert values("streamd@.service", "ExecStart")[0].endswith(
        "--config /etc/streamd/streamd@%i.toml"
    )


def test_the_system_install_lays_out_what_the_units_name(tmp_path: Path) -> None:
    """`install.sh --system --root DIR` (the venv skipped: minutes of pip): the link the
    units' ExecStart goes through, the units, the user, the config and its permissions, and
    a second run keeps the operator's config."""
    if shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None:
        pytest.skip("systemd-sysusers / systemd-tmpfiles are not installed")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles gives /etc/streamd to root: that needs root, even in a root")

    def install() -> None:
        subprocess.run(
            ["bash", str(REPO / "scripts/install.sh"), "--system", "--root", str(tmp_path),
             "--skip-venv"], check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    install()
    streamd = os.readlink(tmp_path / "usr/local/bin/streamd")
    for unit in UNITS:
        installed = tmp_path / "etc/systemd/system" / unit
        assert installed.read_text() == (SYSTEMD / unit).read_text()
        assert values(unit, "ExecStart")[0].startswith(f"{streamd} run --config /etc/streamd/")
    user = next(
        line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
        if line.startswith("streamd:")
    )
    assert user[5] == "/var/lib/streamd" and user[6].endswith("nologin")
    config_dir, config = tmp_path / "etc/streamd", tmp_path / "etc/streamd/streamd.toml"
    for path, mode in ((config_dir, 0o750), (config, 0o640)):
        found = path.stat()
        assert stat.S_IMODE(found.st_mode) == mode
        assert (found.st_uid, found.st_gid) == (0, int(user[3]))
    assert config.read_text() == (SYSTEMD / "streamd.toml").read_text()
    config.write_text("[model]\nname = 'default'\n")
    install()
    assert config.read_text() == "[model]\nname = 'default'\n"
