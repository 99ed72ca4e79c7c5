"""Watch stock Django and this engine meet the faults people meet, side by side.

Run it with ``python3 dev.py demo`` (``--help`` for the options). It starts a throwaway
PostgreSQL, runs the same worker loop once per engine, each through a FaultProxy of its own,
injects one fault per phase, then counts on the server what each engine lost or duplicated.
It exits 0 when this engine lost and duplicated nothing, 1 when it did, 2 when the demo could
not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import fault_lab
import legacy
from display import View, make_console, render_final
from fault_lab import DATABASE, FAULTS, Fault, Lab
from rich.text import Text
from scoring import Score, score

import django_postgresql_reconnect
from django_postgresql_reconnect.testing import FaultProxy, PostgresServer
from workload import PAUSE, Worker, configure, database_entry

STOCK, ENGINE = "stock", "engine"
STOCK_BACKEND = "django.db.backends.postgresql"
ENGINE_BACKEND = "django_postgresql_reconnect.backend"
SILENT = "_silent"  # alias suffix of the server behind the SilentLink
BEFORE = 1.0  # seconds of healthy calls before each fault
STOP_WAIT = 2.0  # a worker still in a call this long after its phase ended is hung


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py demo",
        description=(
            "Run a small Django worker against a throwaway PostgreSQL twice, side by side: "
            "Django's own backend with persistent connections, and this engine. Inject "
            "faults one after another and count failed calls, time to recover, and rows "
            "lost or duplicated. Exit 0 when this engine lost and duplicated nothing."
        ),
        epilog="faults, in order: " + "; ".join(f"{f.name} ({f.what})" for f in FAULTS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--faults",
        default=",".join(f.name for f in FAULTS),
        help="comma-separated faults to inject (default: all of them)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="how long each phase runs after its fault (default 5; the silent drop runs at "
        f"least {fault_lab.SILENT_SECONDS:.0f} s: the engine's tcp_user_timeout is 20 s)",
    )
    parser.add_argument(
        "--loop",
        choices=["worker", "request"],
        default="worker",
        help="worker (default): a long-running loop, nothing closes a broken connection "
        "between jobs; request: close_old_connections() around each job, as Django's "
        "request signals do for views",
    )
    parser.add_argument(
        "--with-1.2.0",
        dest="with_legacy",
        action="store_true",
        help="add a column for django-postgresql-reconnect 1.2.0, installed into "
        ".demo-venvs/v120 (Django<6, psycopg2); skipped if it does not install",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the figures as JSON on stdout (the view goes to stderr)",
    )
    parser.add_argument("--no-color", action="store_true", help="no colours")
    parser.add_argument(
        "--verbose", action="store_true", help="show the engine's log (reconnects, losses)"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = [name for name in names if name not in fault_lab.BY_NAME]
    if unknown or not names:
        parser.error(
            f"unknown fault(s) {', '.join(unknown) or '(none given)'}; choose from "
            + ", ".join(fault_lab.BY_NAME)
        )
    args.selected = [f for f in FAULTS if f.name in names]
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return args


class Calls:
    """Every call of every worker, by engine and phase; written from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

    def emit(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records[record["engine"], record["phase"]].append(record)

    def of(self, engine: str, phase: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records[engine, phase])

    def counts(self, engines: list[str], phase: str) -> dict[str, tuple[int, int]]:
        with self._lock:
            return {
                engine: (
                    len(self._records[engine, phase]),
                    sum(not r["ok"] for r in self._records[engine, phase]),
                )
                for engine in engines
            }


class LocalEngine:
    """A worker thread per phase in this process (each thread has its own connection)."""

    def __init__(self, label: str, calls: Calls, request_cycle: bool) -> None:
        self.label = label
        self.calls = calls
        self.request_cycle = request_cycle
        self.worker: Worker | None = None

    def begin_phase(self, phase: str, alias: str) -> None:
        self.worker = Worker(
            self.label, alias, phase, self.calls.emit, request_cycle=self.request_cycle
        )
        self.worker.start()

    def end_phase(self) -> float | None:
        assert self.worker is not None
        return self.worker.stop(STOP_WAIT)

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    console = make_console(stderr=args.json, no_color=args.no_color)
    _quiet_logs(console if args.verbose else None)

    legacy_state: dict[str, Any] = {}
    installer = None
    if args.with_legacy:
        console.print(
            "1.2.0      preparing .demo-venvs/v120 (Django<6, psycopg2) in the background"
        )

        def install() -> None:
            legacy_state["ready"], legacy_state["note"] = legacy.prepare()

        installer = threading.Thread(target=install, daemon=True)
        installer.start()

    silent_wanted = any(f.silent for f in args.selected)
    silent_skip = fault_lab.silent_drop_unavailable() if silent_wanted else None
    lab, databases, legacy_databases, silent_skip = _build_lab(args, silent_wanted, silent_skip)
    try:
        return _run(
            args,
            console,
            lab,
            databases,
            legacy_databases,
            silent_skip,
            installer,
            legacy_state,
            started,
        )
    finally:
        lab.close()


def _build_lab(
    args: argparse.Namespace, silent_wanted: bool, silent_skip: str | None
) -> tuple[Lab, dict[str, Any], dict[str, Any], str | None]:
    server = PostgresServer()
    server.start()
    lab = Lab(server)
    try:
        _prepare_database(server)
        labels = [STOCK, ENGINE] + (["1.2.0"] if args.with_legacy else [])
        for label in labels:
            lab.proxies[label] = FaultProxy(server.host, server.port)
            lab.proxies[label].start()
        if silent_wanted and silent_skip is None:
            try:
                from django_postgresql_reconnect.testing import SilentLink

                lab.silent_link = SilentLink()
                lab.silent_server = lab.silent_link.start_server()
                _prepare_database(lab.silent_server)
            except Exception as error:  # no ip/nft, no netns support in this container...
                silent_skip = f"SilentLink unavailable here: {error}".splitlines()[0]
                if lab.silent_link is not None:
                    lab.silent_link.close()
                lab.silent_link = lab.silent_server = None
    except BaseException:
        lab.close()
        raise

    def entries(label: str, backend: str, **extra: Any) -> dict[str, Any]:
        proxy = lab.proxies[label]
        app = f"demo-{label}"
        found = {
            label: database_entry(
                backend,
                host=proxy.host,
                port=proxy.port,
                name=DATABASE,
                user=server.user,
                app=app,
                **extra,
            )
        }
        if lab.silent_server is not None:
            found[label + SILENT] = database_entry(
                backend,
                host=lab.silent_server.host,
                port=lab.silent_server.port,
                name=DATABASE,
                user=lab.silent_server.user,
                app=app,
                **extra,
            )
        return found

    databases = {"default": {}, **entries(STOCK, STOCK_BACKEND), **entries(ENGINE, ENGINE_BACKEND)}
    legacy_databases = (
        {"default": {}, **entries("1.2.0", ENGINE_BACKEND, RECONNECT=True)}
        if args.with_legacy
        else {}
    )
    return lab, databases, legacy_databases, silent_skip


def _prepare_database(server: PostgresServer) -> None:
    from orders.schema import CREATE_TABLE

    server.create_database(DATABASE)
    server.execute(CREATE_TABLE, dbname=DATABASE)


def _run(
    args: argparse.Namespace,
    console: Any,
    lab: Lab,
    databases: dict[str, Any],
    legacy_databases: dict[str, Any],
    silent_skip: str | None,
    installer: threading.Thread | None,
    legacy_state: dict[str, Any],
    started: float,
) -> int:
    configure(databases)
    import django
    import psycopg

    calls = Calls()
    request_cycle = args.loop == "request"
    engines: list[Any] = [
        LocalEngine(STOCK, calls, request_cycle),
        LocalEngine(ENGINE, calls, request_cycle),
    ]
    legacy_note = ""
    console.print(
        f"server     PostgreSQL {lab.server.bindir.parent.name} on {lab.server.host}:"
        f"{lab.server.port}, one FaultProxy per engine"
        + (f"; silent-link server on {lab.silent_server.host}" if lab.silent_server else "")
    )
    console.print(
        f"engines    stock = {STOCK_BACKEND}, engine = {ENGINE_BACKEND} "
        f"{django_postgresql_reconnect.__version__} (Django {django.get_version()}, psycopg "
        f"{psycopg.__version__})"
    )
    if installer is not None:
        installer.join()
        if legacy_state.get("ready"):
            engine = legacy.LegacyEngine(legacy_databases, calls.emit, request_cycle)
            try:
                engine.start()
                engines.append(engine)
                legacy_note = f"{legacy_state['note']}; {engine.version}"
            except Exception as error:
                engine.close()
                legacy_note = f"skipped: {error}"
        else:
            legacy_note = f"skipped: {legacy_state.get('note')}"
        console.print(f"1.2.0      {legacy_note}")
    labels = [engine.label for engine in engines]

    planned = [
        (
            fault,
            BEFORE
            + max(args.seconds, fault.min_seconds)
            + (lab.outage if fault.name == "outage" else 0.0),
        )
        for fault in args.selected
    ]
    view = View(console, labels, sum(seconds for _, seconds in planned))
    figures: list[dict[str, Any]] = []
    try:
        with view:
            done = 0.0
            for fault, seconds in planned:
                if fault.silent and silent_skip:
                    view.phase_skipped(fault.title, silent_skip)
                    figures.append(
                        {"fault": fault.name, "title": fault.title, "skipped": silent_skip}
                    )
                else:
                    scores = _phase(fault, args, lab, engines, calls, view)
                    figures.append(
                        {
                            "fault": fault.name,
                            "title": fault.title,
                            "skipped": None,
                            "engines": {s.engine: s.as_json() for s in scores},
                        }
                    )
                done += seconds
                view.progress.update(view.task, completed=done)
            view.step("done")
    finally:
        for engine in engines:
            engine.close()

    elapsed = time.monotonic() - started
    engine_scores = [
        s for _, _, scores in view.results if scores for s in scores if s.engine == ENGINE
    ]
    clean = all(s.clean for s in engine_scores)
    verdict = _verdict(view.results, clean)
    legend = _legend(args, labels, elapsed)
    render_final(console, labels, view.results, legend, verdict)
    if args.json:
        document = {
            "engine_version": django_postgresql_reconnect.__version__,
            "django": django.get_version(),
            "driver": f"psycopg {psycopg.__version__}",
            "loop": args.loop,
            "seconds": args.seconds,
            "legacy": legacy_note or None,
            "phases": figures,
            "total_seconds": round(elapsed, 1),
            "verdict": verdict.plain,
            "engine_clean": clean,
        }
        print(json.dumps(document, indent=2))
    return 0 if clean else 1


def _phase(
    fault: Fault, args: argparse.Namespace, lab: Lab, engines: list[Any], calls: Calls, view: View
) -> list[Score]:
    suffix = SILENT if fault.silent else ""
    labels = [engine.label for engine in engines]
    for engine in engines:
        engine.begin_phase(fault.name, engine.label + suffix)
    view.phase_started(fault.title, lambda: calls.counts(labels, fault.name))
    _wait(view, f"{fault.title}: warming up", BEFORE)
    view.step(f"{fault.title}: injecting")
    fault_at = time.monotonic()
    fault.inject(lab)
    injected_at = time.monotonic()
    injected = injected_at - fault_at
    view.progress.advance(view.task, injected)
    view.fault_injected(fault.title, fault.what, injected)
    _wait(view, f"{fault.title}: watching", max(args.seconds, fault.min_seconds))
    ended_at = time.monotonic()
    hung = {engine.label: engine.end_phase() for engine in engines}
    for proxy in lab.proxies.values():
        proxy.heal()  # a swallow that found no INSERT must not leak into the next phase
    server = lab.silent_server if fault.silent else lab.server
    assert server is not None
    if not server.is_running:
        server.start()
    rows: dict[str, dict[str, int]] = defaultdict(dict)
    for engine_label, token, count in server.execute(
        "SELECT engine, token, count(*) FROM orders_order"
        f" WHERE phase = '{fault.name}' GROUP BY engine, token",
        dbname=DATABASE,
    ):
        rows[engine_label][token] = int(count)
    scores = [
        score(
            label,
            calls.of(label, fault.name),
            fault_at=fault_at if fault.timed_from_start else injected_at,
            injected_at=injected_at,
            ended_at=ended_at,
            hung_since=hung[label],
            rows=rows[label],
        )
        for label in labels
    ]
    view.phase_done(fault.title, scores)
    return scores


def _wait(view: View, description: str, seconds: float) -> None:
    view.step(description)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        pause = min(0.1, left)
        time.sleep(pause)
        view.progress.advance(view.task, pause)


def _verdict(results: list[tuple[str, str, list[Score] | None]], clean: bool) -> Text:
    by_engine: dict[str, list[Score]] = defaultdict(list)
    for _, _, scores in results:
        for s in scores or []:
            by_engine[s.engine].append(s)
    mine = by_engine.get(ENGINE, [])
    if not mine:
        return Text("Verdict: no fault was injected", style="bold yellow")
    lost = sum(s.lost for s in mine)
    duplicated = sum(s.duplicated for s in mine)
    failed = sum(s.failed for s in mine)
    unknown = sum(s.outcome_unknown for s in mine)
    applied = sum(s.unknown_applied for s in mine)
    unrecovered = sum(s.recovered_after is None for s in mine)
    slowest = max((s.recovered_after for s in mine if s.recovered_after is not None), default=0.0)
    stock = by_engine.get(STOCK, [])
    stock_failed = sum(s.failed for s in stock)
    stock_broken = sum(s.recovered_after is None for s in stock)
    if not clean:
        return Text(
            f"Verdict: FAIL: the engine lost {lost} and duplicated {duplicated} row(s).",
            style="bold red",
        )
    recovery = (
        f"recovered from each within {slowest:.1f} s"
        if unrecovered == 0
        else f"did not recover from {unrecovered} of {len(mine)}"
    )
    if failed == 0:
        failures = "no call failed"
    else:
        failures = f"{failed} call{'s' * (failed != 1)} failed"
        if unknown == applied == failed == 1:
            failures += " (reported as outcome unknown; its row is there, exactly once)"
        elif unknown:
            failures += (
                f" ({unknown} reported as outcome unknown, of which {applied} applied, once each)"
            )
    stock_text = ""
    if stock:
        stock_text = f" Stock Django: {stock_failed} failed calls, " + (
            f"still broken after {stock_broken} of {len(stock)} faults."
            if stock_broken
            else "recovered from each."
        )
    return Text(
        f"Verdict: the engine lost 0 rows and duplicated 0 through {len(mine)} faults; "
        f"{failures}; it {recovery}.{stock_text}",
        style="bold green" if unrecovered == 0 else "bold yellow",
    )


def _legend(args: argparse.Namespace, labels: list[str], elapsed: float) -> list[tuple[str, str]]:
    loop = (
        "a long-running worker loop (a management command, a thread consuming a queue): "
        "nothing closes a broken connection between jobs (Django does so at the end of an "
        "HTTP request, Celery around each task; --loop request shows that case)"
        if args.loop == "worker"
        else "close_old_connections() before and after each job, as Django's request "
        "signals do around a view"
    )
    engines = "stock: Django's PostgreSQL backend; engine: this checkout, default settings"
    if "1.2.0" in labels:
        engines += "; 1.2.0: its backend, RECONNECT=True, its decorator on each job"
    return [
        (
            "workload",
            f"per engine, a job every {PAUSE * 1000:.0f} ms: SELECT count(*), then INSERT a "
            "row with a unique token; autocommit, CONN_MAX_AGE=None; " + loop,
        ),
        ("engines", engines),
        (
            "columns",
            "failed: calls that raised or hung; recovered: from the fault to the first "
            "success after the last failure; lost: acknowledged INSERTs missing on the "
            "server; duplicated: extra copies of a row",
        ),
        ("time", f"{elapsed:.0f} s in all"),
    ]


def _quiet_logs(console: Any) -> None:
    """Keep the engine's and the lab's log out of the view, unless --verbose."""
    logger = logging.getLogger("django_postgresql_reconnect")
    logger.propagate = False
    if console is None:
        logger.addHandler(logging.NullHandler())
        return
    from rich.logging import RichHandler

    logger.addHandler(RichHandler(console=console, show_path=False))
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
