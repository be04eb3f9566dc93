"""Who may use streamd's ZeroMQ binds: loopback is open, anything beyond needs CURVE keys
or security.allow_insecure said in so many words."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

from .rules import Section


@dataclass(frozen=True)
class SecurityConfig(Section):
    """Who may use streamd's ZeroMQ sockets. (The control socket is a file in the runtime
    directory, mode 0660; there is no TCP control endpoint.)"""

    section: ClassVar[str] = "security"

    # The daemon's CURVE key pair, the NAME.key_secret file of zmq.auth.create_certificates.
    # With the folder below, every ZeroMQ bind (sources.zmq_pull, outputs.zmq_pub) is a
    # CURVE server; with zmq_sub_server_key, sources.zmq_sub connects as a CURVE client.
    zmq_curve_secret_key_file: Path | None = None
    # A folder of the public NAME.key files of the clients that may connect; nobody else can.
    zmq_curve_authorized_keys: Path | None = None
    # The public key file of the publishers that sources.zmq_sub connects to.
    zmq_sub_server_key: Path | None = None
    # A bind beyond loopback without CURVE is refused at start unless this says, in so
    # many words, that anyone who reaches the port may feed the session.
    allow_insecure: bool = False

    @property
    def curve_server(self) -> bool:
        """Binds are CURVE servers: the key pair and the authorized keys are both given."""
        return self.zmq_curve_authorized_keys is not None

    def _check(self) -> None:
        need_pair = "needs security.zmq_curve_secret_key_file (the daemon's own key pair)"
        if self.zmq_curve_secret_key_file is None:
            for name in ("zmq_curve_authorized_keys", "zmq_sub_server_key"):
                if getattr(self, name) is not None:
                    raise self.invalid(name, need_pair)
        elif not self.curve_server and self.zmq_sub_server_key is None:
            why = (
                "does nothing alone: add security.zmq_curve_authorized_keys (CURVE on "
                "binds) or security.zmq_sub_server_key (CURVE on sources.zmq_sub)"
            )
            raise self.invalid("zmq_curve_secret_key_file", why)


class Bind(NamedTuple):
    """An endpoint the daemon binds a ZeroMQ socket to, and the setting that asks for it."""

    section: Section
    name: str  # the field: "zmq_pull", "zmq_pub"
    endpoint: str


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and inproc:// and for tcp:// on 127.0.0.0/8, ::1 or localhost;
    `tcp://*`, 0.0.0.0, interface names and other hosts reach beyond this machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    tcp = _tcp_host_port(endpoint)
    return tcp is not None and is_loopback_host(tcp[0])


def exposed(binds: Iterable[Bind]) -> list[Bind]:
    """The binds that reach beyond this machine."""
    return [bind for bind in binds if not is_loopback_endpoint(bind.endpoint)]


def check_exposure(binds: Iterable[Bind], security: SecurityConfig) -> None:
    """A bind beyond loopback needs CURVE, or allow_insecure said in so many words."""
    outside = exposed(binds)
    if outside and not (security.curve_server or security.allow_insecure):
        section, name, endpoint = outside[0]
        raise section.invalid(
            name,
            f"{endpoint} listens beyond loopback without authentication (anyone who "
            "reaches the port could use it); configure CURVE keys "
            "(security.zmq_curve_secret_key_file and security.zmq_curve_authorized_keys)"
            ", or set security.allow_insecure = true",
        )


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (bracketed or not) or localhost; 0.0.0.0, :: and other hosts reach
    beyond this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # *, an interface name, a host name
        return False


_WILDCARDS = ("*", "0.0.0.0", "::", "")


def _tcp_host_port(endpoint: str) -> tuple[str, str] | None:
    """(host, port) of a tcp:// endpoint, brackets of an IPv6 host removed; None for others."""
    if not endpoint.startswith("tcp://"):
        return None
    host, *port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    return host.strip("[]"), port[0] if port else ""


def _collide(a: str, b: str) -> bool:
    """Two binds one socket would refuse: the same endpoint, or one TCP port on the same
    host or on every interface (`*`, 0.0.0.0)."""
    if a == b:
        return True
    first, second = _tcp_host_port(a), _tcp_host_port(b)
    if first is None or second is None or first[1] != second[1]:
        return False
    return first[0] == second[0] or first[0] in _WILDCARDS or second[0] in _WILDCARDS


def check_distinct_binds(binds: list[Bind]) -> None:
    """Each ZeroMQ bind on an address of its own, the clash named by both its settings
    (at bind time the second socket's error would blame only itself)."""
    for index, later in enumerate(binds):
        for earlier in binds[:index]:
            if _collide(earlier.endpoint, later.endpoint):
                other = earlier.section.key(earlier.name)
                raise later.section.invalid(
                    later.name,
                    f"{later.endpoint} is also bound by {other} ({earlier.endpoint}); "
                    "one address takes one socket: give each its own port",
                )
