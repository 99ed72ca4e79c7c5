"""Every way a statement reaches the server goes through the engine, not only execute().

COPY (psycopg 3's ``cursor.copy()``, psycopg2's ``copy_expert``, ``copy_from``, ``copy_to``),
``callproc`` and the fetches of server-side cursors get rule 1 (a dead connection is replaced
before anything is sent), the package's exceptions on a loss, and the same log line and
signal; with DEBUG the debug cursor logs what Django's own does.
"""

from __future__ import annotations

import io

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from django_postgresql_reconnect import (
    StatementInterrupted,
    TransactionLost,
    drivers,
    signals,
)
from tests.app.models import Item
from tests.faults import backend_pid, item_names, lose_connection

PG3 = drivers.IS_PSYCOPG3


@pytest.fixture
def losses():
    seen = []

    def on_lost(sender, alias, **kwargs):
        seen.append(alias)

    signals.connection_lost.connect(on_lost)
    yield seen
    signals.connection_lost.disconnect(on_lost)


def copy_rows_in(alias: str, rows: list[str]) -> None:
    with connections[alias].cursor() as cursor:
        if PG3:
            with cursor.copy("COPY app_item (name, value) FROM STDIN") as copy:
                for name in rows:
                    copy.write_row((name, 0))
        else:
            data = "".join(f"{name}\t0\n" for name in rows)
            cursor.copy_expert("COPY app_item (name, value) FROM STDIN", io.StringIO(data))


def copy_names_out(alias: str) -> str:
    with connections[alias].cursor() as cursor:
        if PG3:
            with cursor.copy("COPY (SELECT name FROM app_item ORDER BY id) TO STDOUT") as copy:
                return b"".join(bytes(block) for block in copy).decode()
        out = io.StringIO()
        cursor.copy_to(out, "app_item", columns=["name"])
        return out.getvalue()


def test_the_debug_cursor_logs_copy_as_djangos_own_does():
    """Differential: the same COPY through stock Django and through the engine."""
    logs = {}
    for alias in ("stock", "default"):
        with CaptureQueriesContext(connections[alias]) as captured:
            copy_rows_in(alias, [f"{alias}-copied"])
            copy_names_out(alias)
        logs[alias] = [q["sql"].replace(alias, "X") for q in captured.captured_queries]

    assert logs["stock"] == logs["default"]
    assert any("COPY" in q for q in logs["default"])


def test_copy_in_after_the_backend_died_while_idle_runs_on_a_new_connection(server, losses):
    Item.objects.count()
    lose_connection(server)

    copy_rows_in("default", ["copied"])

    assert item_names(server) == ["copied"]
    assert losses == ["default"]


def test_copy_out_after_a_reset_runs_on_a_new_connection(proxy, server, losses):
    Item.objects.create(name="a")
    proxy.reset_all()

    assert copy_names_out("default") == "a\n"
    assert losses == ["default"]


@pytest.mark.skipif(not PG3, reason="psycopg 3's COPY streams through the caller's block")
def test_copy_in_cut_while_its_data_streams_is_interrupted_and_writes_nothing(server, losses):
    pid = backend_pid()
    with (
        pytest.raises(StatementInterrupted),
        connections["default"].cursor() as cursor,
        cursor.copy("COPY app_item (name, value) FROM STDIN") as copy,
    ):
        copy.write_row(("first", 0))
        server.terminate_backends(pid=pid)
        for i in range(300_000):  # megabytes: the driver sends while the block runs
            copy.write_row((f"more-{i}", 0))

    assert item_names(server) == []
    assert losses == ["default"]
    assert Item.objects.count() == 0  # the next statement has a new connection


def test_callproc_after_the_backend_died_while_idle_runs_on_a_new_connection(server, losses):
    server.execute(
        "CREATE OR REPLACE FUNCTION scenario_add(t text) RETURNS integer VOLATILE LANGUAGE sql"
        " AS $$ INSERT INTO app_item (name, value) VALUES (t, 0) RETURNING 1 $$",
        dbname="app",
    )
    Item.objects.count()
    lose_connection(server)

    with connections["default"].cursor() as cursor:
        cursor.callproc("scenario_add", ["called"])

    assert item_names(server) == ["called"]
    assert losses == ["default"]


def test_server_side_cursor_cut_between_fetches_is_interrupted_not_restarted(server, losses):
    Item.objects.bulk_create([Item(name=f"row-{i}") for i in range(5)])
    rows = Item.objects.order_by("id").values_list("name", flat=True).iterator(chunk_size=1)
    assert next(rows) == "row-0"
    server.terminate_backends(pid=backend_pid())

    with pytest.raises(StatementInterrupted) as caught:
        list(rows)

    assert "streaming" in str(caught.value)
    assert losses == ["default"]
    assert Item.objects.count() == 5


def test_server_side_cursor_cut_inside_a_transaction_loses_the_transaction(server, losses):
    Item.objects.bulk_create([Item(name=f"row-{i}") for i in range(5)])
    with pytest.raises(TransactionLost), transaction.atomic():
        rows = Item.objects.order_by("id").values_list("name", flat=True).iterator(chunk_size=1)
        assert next(rows) == "row-0"
        server.terminate_backends(pid=backend_pid())
        list(rows)

    assert losses == ["default"]
    assert Item.objects.count() == 5


def test_server_side_cursor_after_the_backend_died_while_idle_runs_on_a_new_connection(
    server, losses
):
    Item.objects.bulk_create([Item(name=f"row-{i}") for i in range(3)])
    lose_connection(server)

    names = list(Item.objects.order_by("id").values_list("name", flat=True).iterator(chunk_size=1))

    assert names == ["row-0", "row-1", "row-2"]
    assert losses == ["default"]
