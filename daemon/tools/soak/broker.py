"""The soak's Mosquitto: persistence on, so that a restart keeps what QoS 1 promised (on
SIGTERM it saves the daemon's session, subscription and queued messages, and loads them
on start: a broker restart costs duplicates at worst, never a lost message)."""

from __future__ import annotations

from pathlib import Path

from ..testing import Broker

# The soak counts every message, so the broker must not drop any on its own:
# Mosquitto's default queue (1000 messages per client) would, for a slow subscriber.
MAX_QUEUED_MESSAGES = 1_000_000


def start_soak_broker(workdir: Path) -> Broker:
    """The soak's broker: persistence on, and no queue limit that would drop messages."""
    return Broker.start_on_free_port(
        workdir, persistence_dir=workdir, max_queued_messages=MAX_QUEUED_MESSAGES
    )
