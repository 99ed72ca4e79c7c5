"""A thousand reconnects leave no file descriptor, thread or memory behind.

The long version, 10,000 reconnects with stock Django as a baseline, is
``benchmarks/leaks.py``; its figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import gc
import logging
import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections

from tests.faults import add_database, backend_pid, remove_database

WARM_UP = 50
CYCLES = 1_000
#: Allocator noise; a leak of 1 kB per reconnect would be 1,000 kB here.
RSS_BOUND_KB = 512


def process_figures() -> dict[str, int]:
    status = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": int(fields["Threads"].strip()),
        "rss_kb": int(fields["VmRSS"].split()[0]),
    }


@pytest.fixture
def aliases(postgres_server, fault_proxy) -> Iterator[None]:
    """``leaks``: the engine through a proxy; ``leaks_admin``: a direct connection to kill it.

    The plugin's server trusts its clients: the suite's own asks for a password, whose
    SCRAM exchange would make each reconnect several times slower.
    """
    entry = postgres_server.database_settings(
        host=fault_proxy.host, port=fault_proxy.port, CONN_MAX_AGE=None
    )
    entry["OPTIONS"] = {"sslmode": "disable"}
    add_database("leaks", entry)
    admin = postgres_server.database_settings(engine="django.db.backends.postgresql")
    add_database("leaks_admin", {**admin, "OPTIONS": {"sslmode": "disable"}})
    logger = logging.getLogger("django_postgresql_reconnect")
    logger.disabled = True  # a thousand WARNINGs kept by pytest's log capture look like a leak
    yield
    logger.disabled = False
    remove_database("leaks")
    remove_database("leaks_admin")


def lose_connection(number: int, pid: int, proxy) -> None:
    """Terminate the backend or reset the proxy, in turn; wait until the socket heard it."""
    if number % 2:
        proxy.reset_all()
    else:
        with connections["leaks_admin"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    select.select([connections["leaks"].connection.fileno()], [], [], 5.0)
    proxy.reset_counters()  # the proxy keeps a record of every connection: not ours to count


@pytest.mark.slow
def test_a_thousand_reconnects_leave_no_descriptor_thread_or_memory_behind(fault_proxy, aliases):
    pid = backend_pid("leaks")
    for number in range(WARM_UP):
        lose_connection(number, pid, fault_proxy)
        pid = backend_pid("leaks")
    gc.collect()
    before = process_figures()

    reconnects = 0
    for number in range(CYCLES):
        lose_connection(number, pid, fault_proxy)
        new_pid = backend_pid("leaks")  # meets the dead connection: the engine replaces it
        reconnects += new_pid != pid
        pid = new_pid
    gc.collect()
    after = process_figures()

    assert reconnects == CYCLES
    assert after["fds"] <= before["fds"], (before, after)
    assert after["threads"] <= before["threads"], (before, after)
    assert after["rss_kb"] - before["rss_kb"] <= RSS_BOUND_KB, (before, after)
