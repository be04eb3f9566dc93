"""sd_notify(3) without a library: one datagram to $NOTIFY_SOCKET per message.

Every function is a no-op returning False when $NOTIFY_SOCKET is unset (not
under systemd, or Type= is not notify). A failed send is logged and reported
as False, never raised: a daemon must not die because its supervisor's socket
hiccuped (systemd's own watchdog or start timeout will tell if it matters).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send one sd_notify message ("READY=1", "STATUS=...", several joined by newlines)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # Linux abstract namespace: a leading NUL byte
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as e:
        log.warning("sd_notify failed", extra={"notify_message": message, "error": str(e)})
        return False
    return True


def ready(status: str | None = None) -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> bool:
    """The one-line state `systemctl status` shows; newlines would end the message."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping(status: str | None = None) -> bool:
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def extend_timeout(usec: int) -> bool:
    """Ask for `usec` more microseconds before the start (or stop) timeout fires;
    send it again before that runs out while loading a model."""
    return notify(f"EXTEND_TIMEOUT_USEC={int(usec)}")


def watchdog_interval_s() -> float | None:
    """WatchdogSec= in seconds if the watchdog is on for this process, else None.

    As sd_watchdog_enabled(3) advises, ping at least twice per interval (every
    interval / 2) and ignore $WATCHDOG_USEC meant for another process.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


async def watchdog_loop(interval_s: float) -> None:
    """Ping WATCHDOG=1 every interval_s / 2 from the event loop until cancelled.

    It runs on the loop on purpose: if the loop stalls, the pings stop and
    systemd restarts the daemon, which is what the watchdog is for.
    """
    while True:
        watchdog()
        await asyncio.sleep(interval_s / 2)


async def extend_timeout_loop(every_s: float, usec: int) -> None:
    """While a long start runs (a model loading), ask for `usec` more every `every_s`,
    until cancelled: a load that hangs is still caught."""
    while True:
        extend_timeout(usec)
        await asyncio.sleep(every_s)
