"""Validation helpers for the connectors' frozen config dataclasses.

Configs are checked once, at the edge (in `__post_init__`), so a bad value
stops the daemon at start with a message that names the setting, the value
and the fix, instead of failing later inside a socket call.
"""

from __future__ import annotations

import os
import stat

from streamd.errors import ConfigError as ConfigError  # the project's one; connectors raise it

ZMQ_SCHEMES = ("tcp://", "ipc://", "inproc://")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_positive(name: str, value: float) -> None:
    require(value > 0, f"{name} = {value!r}: must be greater than 0")


def check_port(name: str, value: int) -> None:
    require(0 < value < 65536, f"{name} = {value!r}: a TCP port is 1..65535")


def check_zmq_address(name: str, value: str) -> None:
    require(
        value.startswith(ZMQ_SCHEMES) and len(value) > len("tcp://"),
        f"{name} = {value!r}: a ZeroMQ address looks like tcp://127.0.0.1:5555 "
        f"or ipc:///run/streamd/in.sock ({', '.join(ZMQ_SCHEMES)})",
    )


def check_readable_file(name: str, value: str | None) -> None:
    """A path we can open and read now: exists, is a regular file, and we may read it.

    Tried by opening it (non-blocking, so a FIFO cannot hang the check)
    rather than with os.access, which answers for the real uid, not the effective one.
    """
    if value is None:
        return
    try:
        fd = os.open(value, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        problem = "no such file"
    except OSError as error:
        problem = f"cannot be read ({error.strerror})"
    else:
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        problem = "" if regular else "not a regular file"
    require(not problem, f"{name} = {value!r}: {problem}; it must be a readable PEM file")
