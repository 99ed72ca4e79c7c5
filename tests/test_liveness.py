"""The idle check's round trip: bounded by its timeout, and never a freeze of the process.

A reply can arrive in pieces. If the check called a blocking libpq function once the first
piece was in, psycopg 3 would wait there holding the GIL: every thread of the process would
stop until the server's last byte came. These scenarios run in a child process, so that such
a freeze fails the test by its timeout instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import sys, threading, time
    sys.path[:0] = [{root!r}, {src!r}]
    from tests._driver import select_driver
    driver = select_driver()
    from django_postgresql_reconnect import drivers
    from django_postgresql_reconnect.testing import FaultProxy

    if driver == "psycopg":
        import psycopg as db
    else:
        import psycopg2 as db

    proxy = FaultProxy({host!r}, {port})
    proxy.start()
    connection = db.connect(
        host=proxy.host, port=proxy.port, user={user!r}, password={password!r},
        dbname="postgres", sslmode="disable",
    )
    connection.autocommit = True
    ticks = []
    stop = threading.Event()

    def heartbeat():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    beat = threading.Thread(target=heartbeat)
    beat.start()
    {scenario}
    stop.set()
    beat.join()
    beats = sum(1 for tick in ticks if started < tick < started + took)
    print(f"RESULT {{alive}} {{took:.3f}} {{beats}}")
    proxy.stop()
    """
)


def run_child(server, scenario: str) -> tuple[bool, float, int]:
    """Run a ping scenario in a child process: (alive, seconds the check took, heartbeats of
    another thread while it ran). A frozen process fails by the child's timeout."""
    script = CHILD.format(
        root=str(ROOT),
        src=str(ROOT / "src"),
        host=server.host,
        port=server.port,
        user=server.user,
        password=PASSWORD,
        scenario=textwrap.dedent(scenario).strip(),
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    alive, took, beats = lines[-1].split()[1:]
    return alive == "True", float(took), int(beats)


def test_a_reply_that_arrives_a_byte_at_a_time_is_awaited_without_freezing_other_threads(
    server,
):
    alive, _took, beats = run_child(
        server,
        """
        proxy.trickle(0.05)  # the 11 bytes of the reply take about half a second
        started = time.monotonic()
        alive = drivers.ping(connection, 5.0)
        took = time.monotonic() - started
        proxy.heal()
        """,
    )

    assert alive
    assert beats > 0, "the other threads stood still while the check waited"


def test_a_reply_that_stops_halfway_makes_the_check_fail_at_its_timeout(server):
    alive, took, beats = run_child(
        server,
        """
        proxy.trickle(0.05)
        # EmptyQueryResponse (5 bytes) gets through, ReadyForQuery (6 bytes) stops halfway.
        threading.Timer(0.35, proxy.blackhole).start()
        started = time.monotonic()
        alive = drivers.ping(connection, 1.0)
        took = time.monotonic() - started
        proxy.heal()
        """,
    )

    assert not alive
    assert took >= 1.0, "the check gave up on an error, not at its timeout"
    assert beats > 0, "the other threads stood still while the check waited"
