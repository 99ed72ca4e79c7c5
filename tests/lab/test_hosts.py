"""PrivateHosts: a host name that moves between two servers, for child processes only."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_postgresql_reconnect.testing import PostgresServer, PrivateHosts

from ._client import DRIVER

NAME = "db.lab.test"
#: A child that connects afresh for each connection string it reads, and prints the address
#: of the server that answered: what a long-running process sees when DNS moves.
CHILD = """
import importlib, sys
driver = importlib.import_module(sys.argv[1])
for dsn in sys.stdin:
    connection = driver.connect(dsn.strip(), connect_timeout=5)
    cursor = connection.cursor()
    cursor.execute("SELECT host(inet_server_addr())")
    print(cursor.fetchone()[0], flush=True)
    connection.close()
"""


def shared_port() -> int:
    """A port free on both 127.0.0.2 and 127.0.0.3."""
    for _ in range(20):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.2", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.3", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free on both addresses")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """Two servers on the same port, told apart by their address only."""
    port = shared_port()
    with (
        PostgresServer(host="127.0.0.2", port=port) as old,
        PostgresServer(host="127.0.0.3", port=port) as new,
    ):
        yield old, new


def ask(child: subprocess.Popen[str], dsn: str) -> str:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(dsn + "\n")
    child.stdin.flush()
    return child.stdout.readline().strip()


def test_a_moved_name_sends_the_next_connection_to_the_other_server(
    servers: tuple[PostgresServer, PostgresServer],
) -> None:
    old, new = servers
    machine_hosts = Path("/etc/hosts").read_bytes()
    dsn = f"host={NAME} port={old.port} user=postgres dbname=postgres sslmode=disable"

    with PrivateHosts({NAME: old.host}) as hosts:
        child = hosts.popen(
            [sys.executable, "-c", CHILD, DRIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert ask(child, dsn) == "127.0.0.2"
            hosts.point(NAME, new.host)
            assert ask(child, dsn) == "127.0.0.3"
            hosts.point(NAME, old.host)
            assert ask(child, dsn) == "127.0.0.2"
        finally:
            child.kill()
            child.wait()

    # Neither this process nor the machine ever saw the name.
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(NAME, old.port)
    assert Path("/etc/hosts").read_bytes() == machine_hosts


def test_children_still_resolve_the_machines_own_names() -> None:
    with PrivateHosts({NAME: "127.0.0.2"}) as hosts:
        result = hosts.run(
            ["getent", "hosts", NAME, "localhost"], capture_output=True, text=True, check=True
        )
        path = hosts.path

    assert result.stdout.split()[:2] == ["127.0.0.2", NAME]
    assert "localhost" in result.stdout
    assert not path.exists()


def test_a_name_must_point_at_an_address() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        PrivateHosts({NAME: "db.elsewhere"})
