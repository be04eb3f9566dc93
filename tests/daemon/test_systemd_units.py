"""The unit files and snippets in systemd/, checked by systemd's own tools where they exist."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).parents[2] / "systemd"
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


def runnable_copy(unit: str, directory: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here: `systemd-analyze
    verify` refuses a unit whose ExecStart is missing, and /usr/bin/streamd is not
    installed on a test machine. The venv's streamd script if there is one, else /bin/true."""
    venv_streamd = Path(sys.executable).parent / "streamd"
    binary = venv_streamd if venv_streamd.exists() else Path("/bin/true")
    text = (SYSTEMD / unit).read_text()
    text, count = re.subn(r"^ExecStart=/usr/bin/streamd", f"ExecStart={binary}", text, flags=re.M)
    assert count == 1
    copy = directory / unit
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    copy = runnable_copy(unit, tmp_path)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys and unparsable values, printing a warning: any output
    # at all is a finding.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


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


def test_sysusers_and_tmpfiles_install_into_a_root(tmp_path: Path) -> None:
    """Install the snippets where the comments say and run the real tools on that root."""
    sysusers, tmpfiles = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    if sysusers is None or tmpfiles is None:
        pytest.skip("systemd-sysusers / systemd-tmpfiles are not installed")
    for kind, name in (
        ("sysusers.d", "streamd.sysusers.conf"),
        ("tmpfiles.d", "streamd.tmpfiles.conf"),
    ):
        (tmp_path / "usr/lib" / kind).mkdir(parents=True)
        shutil.copy(SYSTEMD / name, tmp_path / "usr/lib" / kind / "streamd.conf")
    (tmp_path / "etc").mkdir()
    subprocess.run([sysusers, f"--root={tmp_path}"], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [tmpfiles, f"--root={tmp_path}", "--create"], check=True, capture_output=True, timeout=60
    )
    user = next(
        line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
        if line.startswith("streamd:")
    )
    assert user[5] == "/var/lib/streamd" and user[6].endswith("nologin")
    config_dir = (tmp_path / "etc/streamd").stat()
    assert stat.S_IMODE(config_dir.st_mode) == 0o750
    assert (config_dir.st_uid, config_dir.st_gid) == (0, int(user[3]))
