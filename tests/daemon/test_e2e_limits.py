"""#11 observations 9 and 10, through a real daemon (tiny model, CPU) and a real PUSH socket.

- 9: multipart messages bypassed the 1 MiB limit (each frame was checked, not the whole),
  and one oversized frame cost the sender its connection and the good message behind it.
- 10: a message of stacked combining marks became about a token per byte and held the
  engine for minutes; it is now rejected as token_heavy, while CJK text of the same size
  still goes in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from streamd.daemon.tools.testing import free_zmq_endpoint
from tests.daemon.daemon_testing import Daemon, all_counted, daemon_args, row, serving

pytestmark = pytest.mark.network

MIB = 1024 * 1024
SOURCE = "zmq-pull"


@pytest.fixture(scope="module")
def endpoint() -> str:
    return free_zmq_endpoint()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, endpoint: str
) -> Iterator[Daemon]:
    args = daemon_args(tiny_model_dir, "--zmq-bind", endpoint)
    with serving(Daemon(tmp_path_factory.mktemp("daemon"), args)) as daemon:
        yield daemon


@pytest.fixture
def push(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.connect(endpoint)
    yield socket
    socket.close(linger=5000)
    context.term()


def settled(daemon: Daemon, before: dict[str, Any], received: int) -> dict[str, Any]:
    """This source's row once `received` more messages came and each is accounted for."""
    total = row(before, SOURCE)["received"] + received
    status = daemon.wait_status(
        lambda s: all_counted(s, SOURCE, total) and row(s, SOURCE)["queued"] == 0,
        f"{received} more messages, each ingested, dropped or rejected",
    )
    return row(status, SOURCE)


def rejected(source_row: dict[str, Any], reason: str) -> int:
    return int(source_row["rejected_by_reason"].get(reason, 0))


def test_a_message_over_the_limit_in_any_shape_is_rejected_and_the_next_one_arrives(
    daemon: Daemon, push: zmq.Socket[bytes]
) -> None:
    before = daemon.wait_ready()
    push.send(b"x" * (2 * MIB))  # one frame over 1 MiB (it cost the connection before)
    push.send(b"disk /dev/sda1 is 91% full")
    push.send_multipart([b"y" * (600 * 1024)] * 20)  # 12 MB in frames that each fit
    push.send(b"disk /dev/sda1 is 92% full")
    after = settled(daemon, before, 4)
    old = row(before, SOURCE)
    assert rejected(after, "too_large") - rejected(old, "too_large") == 2
    assert after["ingested"] - old["ingested"] == 2


def test_a_token_heavy_message_is_rejected_and_cjk_text_is_not(
    daemon: Daemon, push: zmq.Socket[bytes]
) -> None:
    before = daemon.wait_ready()
    # 200 KB: each letter under 40 combining marks, about a token a byte for this tokenizer.
    zalgo = ("a" + "\u0301\u0308\u0323\u0330" * 10 + " ") * 1200
    push.send(zalgo.encode())
    # CJK runs about 2 tokens a character: under the cap, ingested.
    push.send(("服务器连接失败，请检查网络设置。" * 40).encode())
    push.send(b"disk /dev/sda1 is 93% full")
    after = settled(daemon, before, 3)
    old = row(before, SOURCE)
    assert rejected(after, "token_heavy") - rejected(old, "token_heavy") == 1
    assert after["ingested"] - old["ingested"] == 2
