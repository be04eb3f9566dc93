"""The control package's parts that need no socket: the summary feed's pages and long poll,
tune arguments, any frame parsed or refused with a reason, no torch, the folder check."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamd.daemon.config import Config, ConfigError
from streamd.daemon.control import protocol
from streamd.daemon.control.feed import SummaryFeed
from streamd.daemon.control.protocol import ControlError, ProtocolError, check_args, parse_request
from streamd.daemon.tools.testing import WAIT_S
from tests.daemon.daemon_testing import cli


async def test_feed_recent_and_cursor() -> None:
    feed = SummaryFeed(keep=3)
    for n in range(5):
        feed.publish({"n": n})
    page = await feed.handle({"limit": 2})
    assert [s["n"] for s in page["summaries"]] == [3, 4]
    assert (page["cursor"], page["missed"]) == (5, 0)
    assert (await feed.handle({}))["summaries"] == [{"n": 2}, {"n": 3}, {"n": 4}]


async def test_feed_long_poll_wakes_on_publish_and_times_out() -> None:
    feed = SummaryFeed()
    args = {"after": 0, "epoch": feed.epoch, "wait_s": 5}
    poll = asyncio.ensure_future(feed.handle(args))
    await asyncio.sleep(0.01)
    assert not poll.done()
    feed.publish({"n": 1})
    page = await asyncio.wait_for(poll, WAIT_S)
    assert (page["summaries"], page["cursor"]) == ([{"n": 1}], 1)
    empty = await feed.handle({"after": 1, "epoch": feed.epoch, "wait_s": 0.05})
    assert (empty["summaries"], empty["cursor"]) == ([], 1)


async def test_feed_counts_what_a_slow_follower_missed_and_restarts() -> None:
    feed = SummaryFeed(keep=2)
    for n in range(1, 6):
        feed.publish({"n": n})
    page = await feed.handle({"after": 1, "epoch": feed.epoch})
    assert ([s["n"] for s in page["summaries"]], page["missed"]) == ([4, 5], 2)
    restarted = await feed.handle({"after": 99, "epoch": "an-old-run"})
    assert [s["n"] for s in restarted["summaries"]] == [4, 5]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"after": -1}, "after must be an integer >= 0"),
        ({"after": "3"}, "after must be an integer >= 0"),
        ({"limit": 10_000}, "limit must be an integer from 0 to 256"),
        ({"after": 0, "wait_s": 600}, "wait_s must be a number from 0 to 60"),
        ({"follow": True}, "unknown argument 'follow'; summaries takes after, epoch, limit"),
    ],
)
async def test_feed_arguments_are_checked(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ControlError, match=message):
        await SummaryFeed().handle(args)


def test_tune_arguments_map_onto_config_keys() -> None:
    args = {"max_capacity": 512, "summary_every_tokens": 0, "summary_every_seconds": 5}
    check_args("tune", args, protocol.TUNE_KEYS)
    tuned = Config().with_overrides({protocol.TUNE_KEYS[k]: v for k, v in args.items()})
    assert tuned.cache.max_capacity == 512
    assert (tuned.summary.every_tokens, tuned.summary.every_seconds) == (0, 5.0)
    with pytest.raises(ConfigError, match=r"cache\.max_capacity = 2: must be an integer from 8"):
        Config().with_overrides({protocol.TUNE_KEYS["max_capacity"]: 2})


# --- any input, a defined outcome ---------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
REQUESTISH = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, True, "1", None]),
        "cmd": st.sampled_from([*protocol.COMMANDS, "x", 3]),
        "args": JSON,
        "id": JSON,
        "extra": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256) | REQUESTISH.map(lambda r: json.dumps(r).encode()))
def test_any_frame_parses_or_is_refused_with_a_reason(frame: bytes) -> None:
    try:
        request = parse_request(frame)
    except ProtocolError as e:
        assert str(e)
        return
    assert request.cmd in protocol.COMMANDS
    assert isinstance(request.args, dict)
    protocol.encode_reply(request.id, error="x")  # whatever id passed can be echoed


def test_the_control_package_imports_no_torch() -> None:
    """The CLI imports the client on every call, and status is answered from the event
    loop: neither may pull in torch."""
    modules = ("client", "feed", "handlers", "protocol", "server", "status")
    imports = "; ".join(f"import streamd.daemon.control.{m}" for m in modules)
    check = f"import sys; {imports}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_control_folder_every_user_may_write_is_refused(tmp_path: Path) -> None:
    """It was used silently: another user could put their own socket at the path. The
    daemon refuses to start (exit 2, a setting to change) and says how to fix it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    done = cli("run", "--control-socket", str(shared / "control.sock"), "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert f"control.socket: {shared} is writable by every user (mode 0777)" in done.stderr
    assert not (shared / "control.sock").exists()
