"""Keep the benchmark process and the server backends it talks to on separate CPUs.

Left to the scheduler, a backend that happens to share the client's CPU answers faster than
one that does not. On a small machine that placement differs between two connections by tens
of percent, which would swamp the few microseconds the overhead benchmarks look for.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def pin(aliases: Iterable[str], also: Iterable[int] = ()) -> bool:
    """Pin this process to the first CPU, each alias's backend (and ``also``) to the second.

    Returns False (and changes nothing more) with one CPU, or when the server belongs to a
    user whose processes this one may not move.
    """
    from django.db import connections

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return False
    os.sched_setaffinity(0, {cpus[0]})
    for alias in aliases:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        try:
            os.sched_setaffinity(pid, {cpus[1]})
        except OSError:
            return False
    for pid in also:  # a proxy in between works in turn with the backend, not with us
        os.sched_setaffinity(pid, {cpus[1]})
    return True
