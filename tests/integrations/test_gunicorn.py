"""gunicorn serving the project for real: sync and gthread workers, --preload, timeouts.

What users of gunicorn must see: a worker forked from a master that had a connection never
uses it (it opens its own, and the master's session is untouched); every request after the
server terminated the workers' backends succeeds; and a DEADLINE longer than the worker
timeout gets a sync worker killed in the middle of a request, where a shorter one answers.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integrations.conftest import BIN, Project, free_port, serve

pytest.importorskip("gunicorn", reason="needs the integrations dependency group")


def gunicorn(worker_class: str, *options: str) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "--worker-class",
        worker_class,
        "--log-level",
        "warning",
        *options,
        "tests.integrations.project.wsgi:application",
    ]


@pytest.mark.parametrize(
    "worker_class, options",
    [("sync", ["--workers", "2"]), ("gthread", ["--workers", "2", "--threads", "4"])],
)
def test_preloaded_workers_open_their_own_connections_and_survive_termination(
    project: Project, tmp_path: Path, worker_class: str, options: list[str]
):
    warm_up = tmp_path / "master-backend"
    port = free_port()
    argv = gunicorn(worker_class, "--preload", *options, "--bind", f"127.0.0.1:{port}")
    env = project.env(DPR_SITE_WARM_UP=str(warm_up))
    with serve(argv, port, env) as site, ThreadPoolExecutor(8) as pool:
        master_backend = int(warm_up.read_text())
        before = list(pool.map(lambda _: site.get("/backend"), range(32)))

        assert {status for status, _ in before} == {200}
        assert master_backend not in {answer["backend_pid"] for _, answer in before}
        # The master's session is still there, idle after its one query: no worker spoke on it.
        rows = project.server.execute(
            f"SELECT state, query FROM pg_stat_activity WHERE pid = {master_backend}"
        )
        assert rows == [("idle", "SELECT pg_backend_pid()")]

        project.server.terminate_backends()
        started = time.monotonic()
        after = list(pool.map(lambda _: site.get("/backend"), range(32)))
        seconds = time.monotonic() - started

    assert [status for status, _ in after] == [200] * 32, after
    old = {answer["backend_pid"] for _, answer in before}
    assert old.isdisjoint(answer["backend_pid"] for _, answer in after)
    print(f"{worker_class}: 32 requests after the termination in {seconds:.3f} s")


@pytest.mark.parametrize("deadline", [4.0, 0.5])
def test_a_sync_worker_is_killed_mid_request_when_deadline_exceeds_its_timeout(
    project: Project, deadline: float
):
    """gunicorn kills a sync worker silent for --timeout seconds, in the middle of its request;
    with DEADLINE below the timeout the request ends with DatabaseUnavailable instead."""
    port = free_port()
    databases = {"default": project.entry(RECONNECT={"DEADLINE": deadline})}
    argv = gunicorn(
        "sync", "--preload", "--workers", "1", "--timeout", "1", "--bind", f"127.0.0.1:{port}"
    )
    with serve(argv, port, project.env(databases)) as site:
        assert site.get("/items/count")[0] == 200
        project.proxy.refuse()
        project.server.terminate_backends()

        started = time.monotonic()
        status, body = site.get("/items/count")
        seconds = time.monotonic() - started

    assert status == 500
    if deadline > 1.0:
        # gunicorn's own error page: the worker was aborted, Django never answered.
        assert "WORKER TIMEOUT" in site.output()
        assert "Internal Server Error" in body
    else:
        assert "WORKER TIMEOUT" not in site.output()
        assert "Server Error (500)" in body  # Django's: the view raised DatabaseUnavailable
    print(f"DEADLINE {deadline}, --timeout 1: a 500 after {seconds:.2f} s")


def test_a_gthread_worker_is_not_killed_while_a_request_waits_out_its_deadline(project: Project):
    """A gthread worker's main loop keeps beating while a thread waits for the database."""
    port = free_port()
    databases = {"default": project.entry(RECONNECT={"DEADLINE": 2.0})}
    argv = gunicorn(
        "gthread", "--preload", "--workers", "1", "--threads", "2", "--timeout", "1",
        "--bind", f"127.0.0.1:{port}",
    )  # fmt: skip
    with serve(argv, port, project.env(databases)) as site:
        assert site.get("/items/count")[0] == 200
        project.proxy.refuse()
        project.server.terminate_backends()

        started = time.monotonic()
        status, _ = site.get("/items/count")
        seconds = time.monotonic() - started

    assert status == 500  # DatabaseUnavailable, at the deadline
    assert seconds > 1.0  # the request outlived --timeout, so the worker was not killed for it

    assert "WORKER TIMEOUT" not in site.output()
    print(f"gthread: DatabaseUnavailable after {seconds:.2f} s")
