"""Fixtures shared by every test area: free loopback ports and a real moto server."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401 - see below
import pytest

from daskplatform.identity.slapd import Slapd

# Imported here, while the stack is shallow: hypothesis' pytest plugin otherwise imports it
# in the terminal summary, deep in pluggy's frames, where Debian's Python 3.11.2 fails to
# compile its modules ("AST constructor recursion depth mismatch") and the run errors out.


def let_users_through(folder: Path) -> None:
    """o+x on ``folder`` and the folders above it (pytest makes its temp folders 0700):
    processes under users' uids must reach their directories below it, as they do under
    the agent's state directory on a host."""
    for path in (folder, *folder.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(mode | stat.S_IXOTH)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto in server mode on 127.0.0.1; yields its endpoint URL.

    Tests that use it should create uniquely named resources (or call
    ``moto_reset``) since the server is shared by the session.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A real slapd with the FreeIPA-shaped demo directory, on 127.0.0.1, for the session."""
    with Slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (daskplatform.aws and s3fs) at the moto server with fake credentials."""
    monkeypatch.setenv("DASK_PLATFORM_AWS_ENDPOINT", moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    return moto_server
