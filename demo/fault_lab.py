"""The faults the demo injects, in order, and the lab they are injected into.

The lab is one PostgreSQL server with a FaultProxy per engine in front of it (so a reset hits
every engine's connection), and, as root, a second server behind a SilentLink whose flows can
vanish without a reset. Each fault is a function of the lab; it returns once injected.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django_postgresql_reconnect.testing import FaultProxy, PostgresServer

DATABASE = "shop"
OUTAGE_SECONDS = 3.0
# The engine finds a flow that vanished mid-statement through tcp_user_timeout (20 s by
# default, see TCP_DEFAULTS), so that phase lasts long enough to watch it recover.
SILENT_SECONDS = 24.0


@dataclass
class Lab:
    server: PostgresServer
    proxies: dict[str, FaultProxy] = field(default_factory=dict)
    silent_link: Any = None  # a SilentLink, as root
    silent_server: PostgresServer | None = None
    outage: float = OUTAGE_SECONDS

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
        if self.silent_link is not None:
            self.silent_link.close()
        self.server.close()


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    what: str
    inject: Callable[[Lab], None]
    silent: bool = False  # runs against the server behind the SilentLink (root only)
    min_seconds: float = 0.0
    # Recovery is timed from the start of the injection when the server goes away within it
    # (restart, outage), else from its end (once the fault is in place).
    timed_from_start: bool = False


def _terminate(lab: Lab) -> None:
    lab.server.terminate_backends()  # every client session, as a crash or failover would


def _restart(lab: Lab) -> None:
    lab.server.restart()


def _reset(lab: Lab) -> None:
    for proxy in lab.proxies.values():
        proxy.reset_all()


def _outage(lab: Lab) -> None:
    lab.server.stop()
    time.sleep(lab.outage)
    lab.server.start()


def _lost_reply(lab: Lab) -> None:
    for proxy in lab.proxies.values():
        proxy.swallow_reply("INSERT")


def _silent_drop(lab: Lab) -> None:
    assert lab.silent_link is not None and lab.silent_server is not None
    rows = lab.silent_server.execute(
        "SELECT client_port FROM pg_stat_activity"
        " WHERE application_name LIKE 'demo-%' AND client_port > 0"
    )
    for (port,) in rows:
        lab.silent_link.drop_flow(int(port))


FAULTS = [
    Fault(
        "terminate", "backend terminated", "pg_terminate_backend() on every session", _terminate
    ),
    Fault(
        "restart", "server restarted", "pg_ctl restart -m fast", _restart, timed_from_start=True
    ),
    Fault("reset", "connection reset", "the proxy sends RST on every connection", _reset),
    Fault(
        "outage",
        f"{OUTAGE_SECONDS:.0f}-second outage",
        "server stopped, started again 3 s later",
        _outage,
        timed_from_start=True,
    ),
    Fault(
        "lost-reply",
        "lost INSERT reply",
        "the INSERT runs and commits, its reply never arrives, then RST",
        _lost_reply,
    ),
    Fault(
        "silent-drop",
        "silently dropped flow",
        "every packet of the open connections vanishes, without RST or FIN; root only",
        _silent_drop,
        silent=True,
        min_seconds=SILENT_SECONDS,
    ),
]
BY_NAME = {fault.name: fault for fault in FAULTS}


def silent_drop_unavailable() -> str | None:
    """Why the silent-drop phase cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (a network namespace and nftables); run as root to see it"
    return None
