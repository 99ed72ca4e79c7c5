"""The safety model, attacked systematically: every kind of statement x every moment of loss.

Each case runs one kind of statement (an ORM read or write, raw SQL, a function that writes,
a data-modifying CTE, several statements in one string, executemany over a list and over a
generator, COPY in and out, callproc, a server-side cursor, and each spelling of session
state) while the connection is lost at one moment (idle before sending, its reply lost,
inside atomic() on the first or a later statement, at COMMIT), with real faults: backend
termination, TCP resets, replies dropped by the proxy. The pass runs once per driver.

The server's table is the judge, after every case: no write applied twice, no acknowledged
write lost, no partial transaction, no session state lost without an exception, and the
exception the rules promise. ``expected()`` restates those rules independently of the engine,
and docs/safety-model.md shows the same table (``test_the_documented_table_is_this_suite``).

Seeded: DPR_ADVERSARIAL_SEED picks the tokens and the order of the cases.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connections, transaction

from django_postgresql_reconnect import (
    CommitOutcomeUnknown,
    SessionStateLost,
    StatementInterrupted,
    StatementOutcomeUnknown,
    TransactionLost,
    drivers,
    signals,
)
from tests.app.models import Item
from tests.faults import backend_pid, run, setting, wait_until_server_hung_up

SEED = int(os.environ.get("DPR_ADVERSARIAL_SEED", "20261204"))
PG3 = drivers.IS_PSYCOPG3
DOCS = Path(__file__).resolve().parent.parent / "docs" / "safety-model.md"


def sql_module() -> Any:
    if PG3:
        from psycopg import sql
    else:
        from psycopg2 import sql  # type: ignore[no-redef]
    return sql


# --- Kinds of statement ------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One way a statement reaches the server, and what it leaves behind."""

    name: str
    run: Callable[[str], Any]
    rows: Callable[[str], list[str]] = lambda token: []
    """The rows it writes (names), each of which must be there once or not at all."""
    read: bool = False
    volatile: bool = False
    """It calls a function that writes."""
    stream: str = ""
    """'in' or 'out' for COPY and server-side cursors."""
    state: str = ""
    """'lock' (cannot be restored) or 'setting' (restored), made before the loss."""
    prepare: Callable[[str], Any] | None = None
    pattern: Callable[[str], str] = lambda token: token

    @property
    def writes(self) -> bool:
        return bool(self.rows("x"))


def cursor_run(sql: str, params: Any = None) -> Any:
    return run(sql, params)


def executemany(rows: Any) -> None:
    with connections["default"].cursor() as cursor:
        cursor.executemany("INSERT INTO app_item (name, value) VALUES (%s, 0)", rows)


def copy_in(token: str) -> None:
    with connections["default"].cursor() as cursor:
        if PG3:
            with cursor.copy("COPY app_item (name, value) FROM STDIN") as copy:
                copy.write_row((token, 0))
        else:
            cursor.copy_expert(
                "COPY app_item (name, value) FROM STDIN", io.StringIO(f"{token}\t0\n")
            )


def copy_out(token: str) -> str:
    sql = f"COPY (SELECT name FROM app_item WHERE name = '{token}') TO STDOUT"
    with connections["default"].cursor() as cursor:
        if PG3:
            with cursor.copy(sql) as copy:
                return b"".join(bytes(block) for block in copy).decode()
        out = io.StringIO()
        cursor.copy_expert(sql, out)
        return out.getvalue()


def callproc(token: str) -> None:
    with connections["default"].cursor() as cursor:
        cursor.callproc("scenario_write", [token])


def lock(statement: Callable[[str], Any]) -> Callable[[str], Any]:
    return statement


def composed_lock(token: str) -> None:
    sql = sql_module()
    run(sql.SQL("SELECT pg_advisory_lock({})").format(sql.Literal(4242)))


def composed_setting(token: str) -> None:
    sql = sql_module()
    run(sql.SQL("SET app.token = {}").format(sql.Literal(token)))


def count_named(token: str) -> int:
    return Item.objects.filter(name=token).count()


KINDS = [
    Kind("ORM read", count_named, read=True),
    Kind("ORM write", lambda t: Item.objects.create(name=t), rows=lambda t: [t]),
    Kind(
        "raw read",
        lambda t: cursor_run("SELECT name FROM app_item WHERE name = %s", [t]),
        read=True,
    ),
    Kind(
        "SELECT of a STABLE function",
        lambda t: cursor_run("SELECT scenario_stable_count(%s)", [t]),
        read=True,
    ),
    Kind(
        "SELECT of a VOLATILE function that writes",
        lambda t: cursor_run("SELECT scenario_write(%s)", [t]),
        rows=lambda t: [t],
        volatile=True,
    ),
    Kind(
        "CTE with INSERT",
        lambda t: cursor_run(
            "WITH x AS (INSERT INTO app_item (name, value) VALUES (%s, 0) RETURNING id)"
            " SELECT count(*) FROM x",
            [t],
        ),
        rows=lambda t: [t],
    ),
    Kind(
        "two statements in one string",
        lambda t: cursor_run(
            f"INSERT INTO app_item (name, value) VALUES ('{t}-1', 0);"
            f" INSERT INTO app_item (name, value) VALUES ('{t}-2', 0)"
        ),
        rows=lambda t: [f"{t}-1", f"{t}-2"],
    ),
    Kind(
        "executemany over a list",
        lambda t: executemany([(f"{t}-{i}",) for i in range(5)]),
        rows=lambda t: [f"{t}-{i}" for i in range(5)],
        pattern=lambda t: f"{t}-2",
    ),
    Kind(
        "executemany over a generator",
        lambda t: executemany((f"{t}-{i}",) for i in range(5)),
        rows=lambda t: [f"{t}-{i}" for i in range(5)],
        pattern=lambda t: f"{t}-2",
    ),
    Kind(
        "COPY FROM STDIN",
        copy_in,
        rows=lambda t: [t],
        stream="in",
        pattern=lambda t: "COPY app_item",
    ),
    Kind("COPY TO STDOUT", copy_out, read=True, stream="out"),
    Kind("callproc of a function that writes", callproc, rows=lambda t: [t], volatile=True),
    Kind(
        "server-side cursor",
        lambda t: list(Item.objects.filter(name__startswith=t).iterator(chunk_size=1)),
        read=True,
        stream="fetch",
        # Django before 5.1 binds a psycopg 3 named cursor's parameters on the server, so the
        # token is not in the DECLARE's text.
        pattern=lambda t: "DECLARE",
    ),
    Kind(
        "advisory lock, upper case",
        count_named,
        read=True,
        state="lock",
        prepare=lambda t: run("SELECT PG_ADVISORY_LOCK(4242)"),
    ),
    Kind(
        "advisory lock after a comment",
        count_named,
        read=True,
        state="lock",
        prepare=lambda t: run("/* job */ select pg_try_advisory_lock(4242)"),
    ),
    Kind(
        "advisory lock, composed SQL", count_named, read=True, state="lock", prepare=composed_lock
    ),
    Kind(
        "SELECT INTO TEMP",
        count_named,
        read=True,
        state="lock",
        prepare=lambda t: run("SELECT 1 AS one INTO TEMP scenario_scratch"),
    ),
    Kind(
        "SET after a comment",
        count_named,
        read=True,
        state="setting",
        prepare=lambda t: run(f"/* tenant */ SET app.token = '{t}'"),
    ),
    Kind("SET in composed SQL", count_named, read=True, state="setting", prepare=composed_setting),
    Kind(
        "SET_CONFIG(..., FALSE), upper case",
        count_named,
        read=True,
        state="setting",
        prepare=lambda t: run("SELECT SET_CONFIG('app.token', %s, FALSE)", [t]),
    ),
]

MOMENTS = [
    "idle, backend terminated",
    "idle, TCP reset",
    "reply lost",
    "first in atomic(), reply lost",
    "later in atomic(), reply lost",
    "COMMIT reply lost",
    "dead before COMMIT",
]


# --- What the rules promise (docs/safety-model.md) ---------------------------------------------


@dataclass(frozen=True)
class Expect:
    error: type[BaseException] | None
    """The exception the caller must get (None: the call succeeds)."""
    applied: bool | None
    """Its rows must all be there (True), none of them (False), or either (None)."""
    session_state_lost: bool = False


def expected(kind: Kind, moment: str, *, pg3: bool = PG3) -> Expect:
    """The safety model's answer for one case, restated from the rules, not from the engine."""
    lock = kind.state == "lock"
    if moment.startswith("idle"):
        if lock:
            return Expect(SessionStateLost, False, True)  # rule 5
        return Expect(None, True)  # rule 1
    if moment == "reply lost":
        if lock:
            return Expect(SessionStateLost, False, True)  # rule 5: a read wrote nothing
        if kind.stream == "out":
            return Expect(StatementInterrupted, False)  # rule 11
        if kind.stream == "in":
            # psycopg 3's COPY is cut before its data; psycopg2's may have finished it.
            if pg3:
                return Expect(StatementInterrupted, False)
            return Expect(StatementOutcomeUnknown, None)
        if kind.read and not kind.volatile:
            return Expect(None, True)  # rule 2: the server says it cannot write
        return Expect(StatementOutcomeUnknown, None)  # rule 2
    if moment == "first in atomic(), reply lost":
        if lock:
            return Expect(TransactionLost, False, True)
        if kind.stream in ("in", "out"):
            return Expect(TransactionLost, False)  # rule 11
        if kind.volatile:
            return Expect(StatementOutcomeUnknown, False)  # rule 3: rolled back, effects unknown
        return Expect(None, True)  # rule 3: nothing acknowledged, the transaction reopens
    if moment == "later in atomic(), reply lost":
        return Expect(TransactionLost, False, lock)  # rule 4
    if moment == "COMMIT reply lost":
        return Expect(CommitOutcomeUnknown, True, lock)  # rule 6
    if moment == "dead before COMMIT":
        return Expect(TransactionLost, False, lock)  # rule 6
    raise AssertionError(moment)


def outcome_table() -> str:
    """The table of docs/safety-model.md, as this suite checks it (with psycopg 3)."""
    header = "| Statement | " + " | ".join(MOMENTS) + " |"
    lines = [header, "|" + "---|" * (len(MOMENTS) + 1)]
    for kind in KINDS:
        cells = []
        for moment in MOMENTS:
            expect = expected(kind, moment, pg3=True)
            name = "succeeds" if expect.error is None else expect.error.__name__
            if expect.session_state_lost and expect.error is not SessionStateLost:
                name += " + SessionStateLost"
            if kind.writes:
                name += {True: ", applied", False: ", nothing applied", None: ", maybe applied"}[
                    expect.applied
                ]
            cells.append(name)
        lines.append(f"| {kind.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- Running a case -----------------------------------------------------------------------------


@dataclass
class Case:
    kind: Kind
    moment: str
    token: str
    error: BaseException | None = None
    losses: int = 0
    """Connections the engine saw lost during the case: a case whose fault missed proves
    nothing, so each must see at least one."""


def perform(case: Case, proxy, server) -> None:
    kind, _moment, token = case.kind, case.moment, case.token
    Item.objects.count()  # a warm connection
    if kind.prepare is not None:
        kind.prepare(token)

    def count_loss(**kwargs: object) -> None:
        case.losses += 1

    signals.connection_lost.connect(count_loss)
    try:
        _perform(case, proxy, server)
    finally:
        signals.connection_lost.disconnect(count_loss)


def _perform(case: Case, proxy, server) -> None:
    kind, moment, token = case.kind, case.moment, case.token

    def lose_idle() -> None:
        if moment == "idle, backend terminated":
            server.terminate_backends()
            wait_until_server_hung_up()
        else:
            proxy.reset_all()

    try:
        if moment.startswith("idle"):
            lose_idle()
            kind.run(token)
        elif moment == "reply lost":
            proxy.swallow_reply(kind.pattern(token))
            kind.run(token)
        elif moment == "first in atomic(), reply lost":
            proxy.swallow_reply(kind.pattern(token))
            with transaction.atomic():
                kind.run(token)
                Item.objects.create(name=f"{token}-after")
        elif moment == "later in atomic(), reply lost":
            with transaction.atomic():
                Item.objects.create(name=f"{token}-before")
                proxy.swallow_reply(kind.pattern(token))
                kind.run(token)
        elif moment == "COMMIT reply lost":
            proxy.swallow_reply("COMMIT")
            with transaction.atomic():
                kind.run(token)
                Item.objects.create(name=f"{token}-after")
        elif moment == "dead before COMMIT":
            with transaction.atomic():
                kind.run(token)
                Item.objects.create(name=f"{token}-after")
                server.terminate_backends(pid=backend_pid())
                wait_until_server_hung_up()
    except Exception as error:
        case.error = error


def broken_rules(case: Case, server) -> list[str]:
    kind, moment, token = case.kind, case.moment, case.token
    expect = expected(kind, moment)
    problems = []
    if not case.losses:
        problems.append("the fault never reached the connection: the case proves nothing")
    held = {
        row[0]: int(row[1])
        for row in server.execute(
            f"SELECT name, count(*) FROM app_item WHERE name LIKE '{token}%' GROUP BY name",
            dbname="app",
        )
    }
    if any(count > 1 for count in held.values()):
        problems.append(f"a write applied twice: {held}")
    rows = kind.rows(token)
    present = [name for name in rows if held.get(name)]
    if expect.applied is True and len(present) != len(rows):
        problems.append(f"rows {rows} should all be there; found {present}")
    if expect.applied is False and present:
        problems.append(f"rows {present} should not be there")
    if case.error is None and rows and len(present) != len(rows):
        problems.append(f"the call succeeded but rows are missing: {present} of {rows}")
    companions = [f"{token}-before", f"{token}-after"]
    if moment not in ("idle, backend terminated", "idle, TCP reset", "reply lost"):
        transaction_kept = [n for n in companions if held.get(n)]
        if case.error is None or isinstance(case.error, CommitOutcomeUnknown):
            whole = bool(transaction_kept) == bool(present or not rows)
            if not whole:
                problems.append(f"half a transaction: {held}")
        elif transaction_kept and expect.applied is False:
            problems.append(f"half a transaction survived its loss: {held}")
    if expect.error is None:
        if case.error is not None:
            problems.append(f"raised {type(case.error).__name__}: {case.error}")
    elif not isinstance(case.error, expect.error):
        problems.append(
            f"expected {expect.error.__name__}, got "
            f"{type(case.error).__name__ if case.error else 'no exception'}: {case.error}"
        )
    if expect.session_state_lost and not isinstance(case.error, SessionStateLost):
        problems.append("session state lost without SessionStateLost")
    if not expect.session_state_lost and isinstance(case.error, SessionStateLost):
        problems.append("a SessionStateLost for a session that held nothing")
    if kind.state == "setting":
        value = setting("app.token")
        if value != token:
            problems.append(f"the session setting was not restored: {value!r}")
    try:
        Item.objects.count()
    except Exception as error:
        problems.append(f"the next statement failed: {type(error).__name__}: {error}")
    return problems


def cases() -> list[tuple[Kind, str]]:
    pairs = [(kind, moment) for kind in KINDS for moment in MOMENTS]
    random.Random(SEED).shuffle(pairs)
    return pairs


@pytest.fixture(scope="module", autouse=True)
def scenario_functions(request):
    from tests.conftest import _server

    assert _server is not None
    _server.execute(
        "CREATE OR REPLACE FUNCTION scenario_write(t text) RETURNS integer VOLATILE"
        " LANGUAGE sql AS $$ INSERT INTO app_item (name, value) VALUES (t, 0) RETURNING 1 $$;"
        " CREATE OR REPLACE FUNCTION scenario_stable_count(t text) RETURNS bigint STABLE"
        " LANGUAGE sql AS $$ SELECT count(*) FROM app_item WHERE name = t $$",
        dbname="app",
    )


@pytest.mark.parametrize(
    "kind,moment",
    cases(),
    ids=[f"{kind.name} / {moment}" for kind, moment in cases()],
)
def test_the_safety_model_holds(kind, moment, proxy, server):
    index = KINDS.index(kind) * len(MOMENTS) + MOMENTS.index(moment)
    token = f"k{random.Random(SEED + index).randrange(10**6):06d}x"
    case = Case(kind, moment, token)
    if kind.state == "setting":
        run("RESET app.token")
    perform(case, proxy, server)

    problems = broken_rules(case, server)

    assert not problems, f"seed {SEED}, token {token}: " + "; ".join(problems)


def test_the_documented_table_is_this_suite():
    """docs/safety-model.md shows exactly the outcomes this suite checks."""
    text = DOCS.read_text()
    start = text.index("<!-- adversarial:start")
    end = text.index("<!-- adversarial:end -->")
    documented = text[text.index("\n", start) + 1 : end].strip()
    assert documented == outcome_table(), (
        f"paste this into docs/safety-model.md:\n{outcome_table()}"
    )
