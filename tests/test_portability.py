"""The package imports and recovers where Windows lacks POSIX pieces, proved by hiding them here.

A child process removes what Windows does not have (``select.poll``, ``MSG_DONTWAIT``,
``POLLRDHUP``, ``pwd``, ``fcntl``, ``os.fork`` and ``os.register_at_fork``, ``os.geteuid``)
before anything is imported, then imports every public module, connects, loses its backend and
recovers through the portable liveness check (``select.select``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from django.db import connections

CHILD = textwrap.dedent(
    """
    import json, os, select, socket, sys, time

    for name in ("pwd", "grp", "fcntl", "termios", "resource"):
        sys.modules[name] = None
    for module, attribute in [
        (select, "poll"), (select, "POLLRDHUP"), (socket, "MSG_DONTWAIT"),
        (os, "fork"), (os, "register_at_fork"), (os, "geteuid"),
    ]:
        if hasattr(module, attribute):
            delattr(module, attribute)

    from tests._driver import select_driver

    select_driver()
    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": json.loads(os.environ["DPR_ENTRY"])})
    django.setup()

    import django_postgresql_reconnect as dpr
    import django_postgresql_reconnect.backend.base
    import django_postgresql_reconnect.checks
    import django_postgresql_reconnect.testing
    from django_postgresql_reconnect import liveness

    assert not liveness._HAS_POLL
    for name in dpr.__all__:
        getattr(dpr, name)

    from django.db import connection

    def run(sql):
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]

    first = run("SELECT pg_backend_pid()")
    killer = connection.copy()  # a second session of the same alias, to kill the first
    with killer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [first])
    killer.close()
    time.sleep(0.2)
    second = run("SELECT pg_backend_pid()")
    print(json.dumps({"first": first, "second": second}))
    """
)


def test_the_package_works_without_the_posix_only_pieces():
    entry = dict(connections.settings["direct"])
    entry = {
        k: v
        for k, v in entry.items()
        if k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS", "CONN_MAX_AGE")
    }
    env = {
        **os.environ,
        "DPR_ENTRY": json.dumps(entry),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert pids["first"] != pids["second"]  # recovered on a new connection, without poll()
