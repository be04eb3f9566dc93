"""Where streamd's files and sockets go: systemd's directories, XDG's, or /run and /var/lib."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/streamd/streamd.toml")


def _first_path(value: str) -> str:
    # systemd joins several RuntimeDirectory=/StateDirectory= entries with ':'.
    return value.split(":", 1)[0]


def control_socket_candidates(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where a daemon's control socket may be, most specific first.

    $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=), then $XDG_RUNTIME_DIR/streamd
    (a user running `streamd run` by hand), then /run/streamd (the system service
    as seen from an admin's shell, whose XDG_RUNTIME_DIR is their own).
    """
    env = os.environ if environ is None else environ
    dirs = []
    if env.get("RUNTIME_DIRECTORY"):
        dirs.append(Path(_first_path(env["RUNTIME_DIRECTORY"])))
    if env.get("XDG_RUNTIME_DIR"):
        dirs.append(Path(env["XDG_RUNTIME_DIR"]) / "streamd")
    dirs.append(Path("/run/streamd"))
    return list(dict.fromkeys(d / "control.sock" for d in dirs))


def default_control_socket(environ: Mapping[str, str] | None = None) -> Path:
    return control_socket_candidates(environ)[0]


def find_control_socket(
    explicit: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The socket a CLI command should talk to: --control-socket, $STREAMD_CONTROL_SOCKET,
    else the first candidate that exists (else the first candidate, for the error message)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("STREAMD_CONTROL_SOCKET"):
        return Path(env["STREAMD_CONTROL_SOCKET"])
    candidates = control_socket_candidates(env)
    return next((path for path in candidates if path.exists()), candidates[0])


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$STATE_DIRECTORY (systemd's StateDirectory=), else the XDG/home or /var/lib location."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(_first_path(env["STATE_DIRECTORY"]))
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "streamd"
    if os.geteuid() == 0:
        return Path("/var/lib/streamd")
    return Path.home() / ".local" / "state" / "streamd"


def default_client_id(environ: Mapping[str, str] | None = None) -> str:
    """streamd-<host>, plus -gpu<N> when CUDA_VISIBLE_DEVICES names one GPU (streamd@N).

    The id must be stable, for the broker to keep our persistent session across
    restarts, and distinct per daemon, or the broker disconnects one for the other.
    """
    env = os.environ if environ is None else environ
    gpu = env.get("CUDA_VISIBLE_DEVICES", "")
    suffix = f"-gpu{gpu}" if gpu and "," not in gpu else ""
    return f"streamd-{socket.gethostname()}{suffix}"
