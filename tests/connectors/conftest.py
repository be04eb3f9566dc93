"""Connector test fixtures; also makes the helpers module next to this file importable."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).parent))

from connector_testing import TlsFiles, make_tls_files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def context() -> AsyncIterator[zmq.asyncio.Context]:
    """An asyncio ZeroMQ context for the test, destroyed (linger 0) at teardown."""
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)
