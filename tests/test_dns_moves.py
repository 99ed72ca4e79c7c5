"""A primary reached by a DNS name that moves (Aurora, Cloud SQL): the reconnect resolves again.

Two servers share a port on 127.0.0.2 and 127.0.0.3; a child process runs Django with the
engine and ``HOST`` set to a name that only the child's private hosts file knows
(``PrivateHosts``: nothing of the machine's configuration changes). The name moves from one
server to the other while the first stops: the child's next query lands on the second one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from django_postgresql_reconnect.testing import PostgresServer, PrivateHosts
from tests.conftest import PASSWORD
from tests.lab.test_hosts import shared_port

NAME = "primary.db.test"

CHILD = """
import json, os, sys
from tests._driver import select_driver

select_driver()
import django
from django.conf import settings

settings.configure(DATABASES={"default": json.loads(os.environ["DPR_ENTRY"])})
django.setup()
from django.db import connection

for line in sys.stdin:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT host(inet_server_addr())")
            print(cursor.fetchone()[0], flush=True)
    except Exception as error:
        print(f"{type(error).__name__}: {error}".splitlines()[0], flush=True)
"""


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    port = shared_port()
    with (
        PostgresServer(host="127.0.0.2", port=port, auth="password", password=PASSWORD) as old,
        PostgresServer(host="127.0.0.3", port=port, auth="password", password=PASSWORD) as new,
    ):
        yield old, new


def ask(child: subprocess.Popen[str]) -> str:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("query\n")
    child.stdin.flush()
    return child.stdout.readline().strip()


def test_the_reconnect_follows_a_moved_name_without_a_failed_query(servers):
    old, new = servers
    entry = {
        "ENGINE": "django_postgresql_reconnect.backend",
        "NAME": "postgres",
        "USER": old.user,
        "PASSWORD": PASSWORD,
        "HOST": NAME,
        "PORT": old.port,
        "CONN_MAX_AGE": None,
        "OPTIONS": {"sslmode": "disable"},
    }
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "DPR_ENTRY": json.dumps(entry), "PYTHONPATH": os.pathsep.join(sys.path)}
    with PrivateHosts({NAME: old.host}) as hosts:
        child = hosts.popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        try:
            assert ask(child) == "127.0.0.2"
            hosts.point(NAME, new.host)  # the failover moves the name...
            old.stop()  # ...and the old primary is gone
            assert ask(child) == "127.0.0.3"
        finally:
            child.kill()
            child.wait()
            old.start()
