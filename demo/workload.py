"""The workload the demo runs once per engine: a long-running worker that reads and writes.

Shared by the demo itself (stock Django and this engine, one thread each) and by the child
process that runs django-postgresql-reconnect 1.2.0 in its own environment, so every column of
the table is the same code. Only Django and the standard library: no rich here.

One job, as a queue worker would run it: count this worker's orders, then insert a new one
with a unique token, both in autocommit. The loop never sends Django's request signals, so
nothing closes a broken connection between jobs: that is what a management command or a
thread consuming a queue does (Django closes broken persistent connections only at HTTP
request boundaries, Celery at task boundaries). ``request_cycle=True`` emulates those instead.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]
Emit = Callable[[Record], None]

# Pause between jobs: about 20 jobs a second per worker, enough to see every call a fault hits.
PAUSE = 0.05
# Class names of the errors that mean "the write may or may not have happened" (this engine's
# StatementOutcomeUnknown and its CommitOutcomeUnknown subclass); by name, so that the 1.2.0
# child, where they do not exist, runs the same code.
OUTCOME_UNKNOWN = frozenset({"StatementOutcomeUnknown", "CommitOutcomeUnknown"})


def configure(databases: dict[str, dict[str, Any]]) -> None:
    """Set Django up with these aliases and the demo's one app."""
    import django
    from django.conf import settings

    settings.configure(
        DATABASES=databases,
        INSTALLED_APPS=["orders"],
        USE_TZ=True,
        SECRET_KEY="demo",
        LOGGING_CONFIG=None,
    )
    django.setup()


def database_entry(
    engine: str, *, host: str, port: int, name: str, user: str, app: str, **extra: Any
) -> dict[str, Any]:
    """A DATABASES entry with persistent connections, as a production worker would have."""
    return {
        "ENGINE": engine,
        "NAME": name,
        "USER": user,
        "PASSWORD": "",
        "HOST": host,
        "PORT": str(port),
        "CONN_MAX_AGE": None,
        "OPTIONS": {"sslmode": "disable", "application_name": app},
        **extra,
    }


class Worker:
    """Run jobs on one alias in a thread of its own until stopped, reporting every call."""

    def __init__(
        self,
        engine: str,
        alias: str,
        phase: str,
        emit: Emit,
        *,
        request_cycle: bool = False,
        guard: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
    ) -> None:
        self.engine = engine
        self.alias = alias
        self.phase = phase
        self.emit = emit
        self.request_cycle = request_cycle
        self.guard = guard
        self.in_call_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"worker-{engine}-{phase}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> float | None:
        """Stop after the current job; return when the call still running began, if one is."""
        self._stop.set()
        self._thread.join(timeout)
        return self.in_call_since if self._thread.is_alive() else None

    def _run(self) -> None:
        from django.db import close_old_connections, connections

        job = self._job if self.guard is None else self.guard(self._job)
        try:
            while not self._stop.is_set():
                if self.request_cycle:
                    close_old_connections()  # what request_started does
                self._call(job)
                if self.request_cycle:
                    close_old_connections()  # what request_finished does
                self._stop.wait(PAUSE)
        finally:
            with contextlib.suppress(Exception):
                connections[self.alias].close()

    def _call(self, job: Callable[[], None]) -> None:
        self._token = uuid.uuid4().hex
        self._sent_insert = False
        record: Record = {
            "engine": self.engine,
            "phase": self.phase,
            "token": self._token,
            "start": time.monotonic(),
        }
        self.in_call_since = record["start"]
        try:
            job()
        except Exception as error:
            record.update(ok=False, error=_describe(error), kind=type(error).__name__)
            record["outcome_unknown"] = type(error).__name__ in OUTCOME_UNKNOWN
        else:
            record.update(ok=True)
        record.update(end=time.monotonic(), insert_sent=self._sent_insert)
        # Acknowledged: the INSERT returned, so the row must be there, exactly once.
        record["acked"] = record["ok"]
        self.in_call_since = None
        self.emit(record)

    def _job(self) -> None:
        from orders.models import Order

        orders = Order.objects.using(self.alias)
        orders.filter(engine=self.engine, phase=self.phase).count()
        self._sent_insert = True
        orders.create(engine=self.engine, phase=self.phase, token=self._token)


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip()
