"""pytest fixtures for testing against a real PostgreSQL with real faults.

Loaded through the ``pytest11`` entry point. Importing it must not import Django or a driver:
it loads in every pytest run of every project that has this package installed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest

from .server import PostgresServer

if TYPE_CHECKING:
    from .netns import SilentLink
    from .proxy import FaultProxy

#: Set to 1 (as CI does) to turn a skip for want of root into a failure, so none goes unseen.
REQUIRE_ROOT_ENV = "DPR_REQUIRE_ROOT_TESTS"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root (network namespaces)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        require_root(f"{item.name} is marked root")


def require_root(reason: str) -> None:
    """Skip the current test unless we are root; fail instead when DPR_REQUIRE_ROOT_TESTS=1."""
    if os.geteuid() != 0:
        _skip_or_fail(f"needs root: {reason}")


def _skip_or_fail(message: str) -> NoReturn:
    if os.environ.get(REQUIRE_ROOT_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ROOT_ENV}=1 forbids skipping it)", pytrace=False)
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
            f"SilentLink needs {' and '.join(missing)}: apt-get install iproute2 nftables"
        )
    from .netns import SilentLink

    link = SilentLink()
    try:
        yield link
    finally:
        link.close()
