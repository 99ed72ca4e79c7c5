"""pytest fixtures for testing against a real PostgreSQL with real faults.

Not loaded by itself: installing the package never changes a project's test run. Ask for it
in a ``conftest.py``::

    pytest_plugins = ["django_postgresql_reconnect.testing.pytest_plugin"]

or with ``pytest -p django_postgresql_reconnect.testing.pytest_plugin``. Importing it imports
neither Django nor a driver.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest

from . import _privileges
from .server import PostgresServer

if TYPE_CHECKING:
    from .netns import SilentLink
    from .pgbouncer import PgBouncer
    from .proxy import FaultProxy

#: Set to 1 (as CI does) to turn a skip for want of root into a failure, so none goes unseen.
REQUIRE_ROOT_ENV = "DPR_REQUIRE_ROOT_TESTS"
#: Set to 1 (as CI does) to turn a skip for want of the pgbouncer program into a failure.
REQUIRE_PGBOUNCER_ENV = "DPR_REQUIRE_PGBOUNCER"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root (network namespaces)")
    config.addinivalue_line("markers", "pgbouncer: needs the pgbouncer program")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        require_root(f"{item.name} is marked root")
    if item.get_closest_marker("pgbouncer") is not None:
        require_pgbouncer()


def require_root(reason: str) -> None:
    """Skip the current test unless we are root; fail instead when DPR_REQUIRE_ROOT_TESTS=1."""
    if not _privileges.is_root():
        _skip_or_fail(f"needs root: {reason}", REQUIRE_ROOT_ENV)


def require_pgbouncer() -> None:
    """Skip the current test unless pgbouncer is installed; fail instead when
    DPR_REQUIRE_PGBOUNCER=1."""
    from .pgbouncer import BINARY_ENV, find_pgbouncer

    if find_pgbouncer() is None:
        configured = os.environ.get(BINARY_ENV)
        where = (
            f"{BINARY_ENV}={configured} is not an executable file"
            if configured
            else "apt-get install pgbouncer (or your system's package), "
            f"or set {BINARY_ENV} to the program"
        )
        _skip_or_fail(f"needs pgbouncer: {where}", REQUIRE_PGBOUNCER_ENV)


def _skip_or_fail(message: str, require_env: str) -> NoReturn:
    """Skip with ``message``, unless ``require_env`` is 1: a run that must not skip fails."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{message} ({require_env}=1 forbids skipping it)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running throwaway server for the whole session, deleted afterwards."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def fault_proxy(postgres_server: PostgresServer) -> Iterator[FaultProxy]:
    """A started FaultProxy in front of ``postgres_server``; connect to its host and port."""
    from .proxy import FaultProxy

    proxy = FaultProxy(postgres_server.host, postgres_server.port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def silent_link() -> Iterator[SilentLink]:
    """A SilentLink (network namespace pair) that can drop packets without a reset."""
    require_root("SilentLink creates network namespaces and nftables rules")
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        _skip_or_fail(
            f"SilentLink needs {' and '.join(missing)}: apt-get install iproute2 nftables",
            REQUIRE_ROOT_ENV,
        )
    from .netns import SilentLink

    link = SilentLink()
    try:
        yield link
    finally:
        link.close()


@pytest.fixture
def pgbouncer(
    request: pytest.FixtureRequest, postgres_server: PostgresServer
) -> Iterator[PgBouncer]:
    """A started PgBouncer in front of ``postgres_server``, in session pooling unless the
    test asks for another mode: ``@pytest.mark.parametrize("pgbouncer", ["transaction"],
    indirect=True)``. Skipped without pgbouncer (failed under DPR_REQUIRE_PGBOUNCER=1)."""
    require_pgbouncer()
    from .pgbouncer import PgBouncer

    with PgBouncer(postgres_server, pool_mode=getattr(request, "param", "session")) as bouncer:
        yield bouncer
