"""Failover, replicas and PgBouncer, with the real thing: a primary and a streaming replica
made by ``PostgresCluster``, and PgBouncer in session and transaction pooling.

Each scenario runs a worker that writes a unique row every 20 ms (and readers beside it)
while the fault happens, then judges by the table: no acknowledged write lost, none
duplicated, no failed call once the fault is over (reads: none failed at all), and the
seconds from the end of the fault (the promotion done, the server back) to the first write.
Set DPR_SCENARIO_REPORT to a file to collect those seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from django.db import connections
from django.test import override_settings

from django_postgresql_reconnect import SessionStateLost, StatementOutcomeUnknown, drivers
from django_postgresql_reconnect.testing import FaultProxy, PgBouncer, PostgresCluster
from tests.app.models import Item
from tests.conftest import PASSWORD
from tests.faults import add_database, remove_database, run
from tests.workload import Workload

TABLE = (
    "CREATE TABLE app_item (id serial PRIMARY KEY, name varchar(100) NOT NULL UNIQUE,"
    " value integer NOT NULL DEFAULT 0)"
)


def report(scenario: str, seconds: float) -> None:
    path = os.environ.get("DPR_SCENARIO_REPORT")
    if path:
        driver = "psycopg 3" if drivers.IS_PSYCOPG3 else "psycopg2"
        with open(path, "a") as out:
            out.write(json.dumps({"scenario": scenario, "driver": driver, "seconds": seconds}))
            out.write("\n")


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster(replicas=1, auth="password", password=PASSWORD) as made:
        made.primary.create_database("app")
        made.primary.execute(TABLE, dbname="app")
        made.wait_for_replay()
        yield made


@pytest.fixture
def aliases(cluster) -> Iterator[dict[str, str]]:
    """``primary`` follows the primary across hosts; ``replica`` is the replica alone."""
    fast = {"DEADLINE": 15.0, "IDLE_CHECK_AFTER": 0.5}
    add_database(
        "cluster_primary",
        cluster.database_settings(
            name="app", CONN_MAX_AGE=None, RECONNECT=fast, OPTIONS={"sslmode": "disable"}
        ),
    )
    replica = cluster.replicas[0].database_settings(name="app")
    replica.update(CONN_MAX_AGE=None, RECONNECT=fast, OPTIONS={"sslmode": "disable"})
    add_database("cluster_replica", replica)
    yield {"primary": "cluster_primary", "replica": "cluster_replica"}
    remove_database("cluster_primary")
    remove_database("cluster_replica")


def names_on(node) -> list[str]:
    return [row[0] for row in node.execute("SELECT name FROM app_item", dbname="app")]


def judge(workload: Workload, node, settled_at: float, scenario: str):
    outcome = workload.outcome(names_on(node), settled_at=settled_at)
    assert not outcome.lost, outcome.summary()
    assert not outcome.duplicated, outcome.summary()
    assert not outcome.failed_after_settled, outcome.summary()
    assert not outcome.failed_reads, outcome.summary()
    assert outcome.first_write_after < 5, outcome.summary()
    report(scenario, round(outcome.first_write_after, 3))
    return outcome


def replicate_synchronously(primary) -> None:
    """Make every commit wait for the replica, as Patroni's synchronous mode does.

    With asynchronous replication a primary that crashes takes its last acknowledged commits
    with it, whatever the client does; a test that counts lost writes across a crash needs them
    on the replica before they are acknowledged.
    """
    primary.configure({"synchronous_standby_names": "*"})
    deadline = time.monotonic() + 10
    while primary.execute("SELECT sync_state FROM pg_stat_replication") != [("sync",)]:
        assert time.monotonic() < deadline, "the replica never became synchronous"
        time.sleep(0.05)


def test_a_primary_stops_and_the_replica_is_promoted(cluster, aliases):
    old, new = cluster.primary, cluster.replicas[0]
    replicate_synchronously(old)
    workload = Workload(aliases["primary"], read_alias=aliases["replica"]).start()
    try:
        old.stop("immediate")
        time.sleep(0.5)  # the time a failover manager takes to decide
        cluster.promote(new)
        settled_at = time.monotonic()
        time.sleep(1.5)
    finally:
        workload.stop()
    judge(workload, new, settled_at, "primary stopped, replica promoted")


def test_a_primary_turns_read_only_and_the_replica_is_promoted(cluster, aliases):
    """The old primary keeps answering, refusing writes with 25006: rule 8 moves them."""
    workload = Workload(aliases["primary"], read_alias=aliases["replica"]).start()
    old, new = cluster.primary, cluster.replicas[0]
    try:
        old.configure({"default_transaction_read_only": "on"})  # reloaded, no restart
        time.sleep(0.3)
        cluster.wait_for_replay()  # a switchover waits for the replica to catch up
        cluster.promote(new)
        settled_at = time.monotonic()
        time.sleep(1.5)
    finally:
        workload.stop()
    outcome = judge(workload, new, settled_at, "primary turned read-only, replica promoted")
    assert not [
        c for c in outcome.writes if c.error and not isinstance(c.error, StatementOutcomeUnknown)
    ]


class ReplicaRouter:
    """Reads to the replica alias, writes to the primary: the usual replica router."""

    def db_for_read(self, model, **hints):
        return "cluster_replica"

    def db_for_write(self, model, **hints):
        return "cluster_primary"


def test_reads_routed_to_a_replica_survive_its_restart(cluster, aliases):
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.ReplicaRouter"]):
        assert Item.objects.count() == 0  # routed: the replica has the table, empty
        workload = Workload(aliases["primary"], read_alias=None)
        calls: list[Exception | None] = []
        replica = cluster.replicas[0]

        def read_loop() -> None:
            import threading

            stop = threading.Event()

            def reader() -> None:
                try:
                    while not stop.is_set():
                        try:
                            Item.objects.count()
                            calls.append(None)
                        except Exception as error:
                            calls.append(error)
                        time.sleep(0.02)
                finally:
                    connections.close_all()

            threads = [threading.Thread(target=reader) for _ in range(2)]
            for thread in threads:
                thread.start()
            time.sleep(0.3)
            replica.restart()
            time.sleep(1.0)
            stop.set()
            for thread in threads:
                thread.join(30)

        workload.start()
        try:
            read_loop()
        finally:
            workload.stop()
    failed = [c for c in calls if c is not None]
    assert calls and not failed, failed[:3]
    report("replica restarted under routed reads", 0.0)


# --- PgBouncer ------------------------------------------------------------------------------


@pytest.fixture(params=["session", "transaction"])
def bouncer(request, server) -> Iterator[tuple[PgBouncer, str]]:
    from django_postgresql_reconnect.testing.pytest_plugin import require_pgbouncer

    require_pgbouncer()
    mode = request.param
    with PgBouncer(server, pool_mode=mode) as pgbouncer:
        entry = pgbouncer.database_settings(name="app")
        entry.update(CONN_MAX_AGE=None, OPTIONS={"sslmode": "disable"})
        entry["RECONNECT"] = {
            "TRANSACTION_POOLING": mode == "transaction",
            "IDLE_CHECK_AFTER": 0.5,
        }
        add_database("bouncer", entry)
        try:
            yield pgbouncer, mode
        finally:
            remove_database("bouncer")


def test_pgbouncer_restarted_then_the_server_behind_it(bouncer, server):
    pgbouncer, mode = bouncer
    workload = Workload("bouncer", read_alias="bouncer", prefix=f"b{mode[0]}").start()
    try:
        pgbouncer.restart()
        time.sleep(0.5)
        server.restart()
        settled_at = time.monotonic()
        time.sleep(1.5)
    finally:
        workload.stop()
    outcome = workload.outcome(
        [r[0] for r in server.execute("SELECT name FROM app_item", dbname="app")],
        settled_at=settled_at,
    )
    assert not outcome.lost and not outcome.duplicated, outcome.summary()
    assert not outcome.failed_after_settled, outcome.summary()
    unexplained = [
        c
        for c in outcome.calls
        if c.error is not None and not isinstance(c.error, StatementOutcomeUnknown)
    ]
    assert not unexplained, outcome.summary()
    report(
        f"PgBouncer ({mode} pooling) and its server restarted", round(outcome.first_write_after, 3)
    )


@pytest.fixture
def proxied_bouncer(server) -> Iterator[tuple[PgBouncer, FaultProxy]]:
    from django_postgresql_reconnect.testing.pytest_plugin import require_pgbouncer

    require_pgbouncer()
    with (
        PgBouncer(server, pool_mode="transaction") as pgbouncer,
        FaultProxy(pgbouncer.host, pgbouncer.port) as proxy,
    ):
        yield pgbouncer, proxy


def _bouncer_alias(pgbouncer, proxy, *, pooling_flag: bool) -> str:
    entry = pgbouncer.database_settings(name="app")
    entry.update(
        CONN_MAX_AGE=None, HOST=proxy.host, PORT=proxy.port, OPTIONS={"sslmode": "disable"}
    )
    entry["RECONNECT"] = {"TRANSACTION_POOLING": pooling_flag}
    add_database("pooled", entry)
    return "pooled"


def test_transaction_pooling_keeps_a_lost_reply_outcome_unknown(proxied_bouncer, server):
    pgbouncer, proxy = proxied_bouncer
    alias = _bouncer_alias(pgbouncer, proxy, pooling_flag=True)
    try:
        Item.objects.using(alias).count()
        proxy.swallow_reply("INSERT")
        with pytest.raises(StatementOutcomeUnknown):
            Item.objects.using(alias).create(name="once")
        assert [r[0] for r in server.execute("SELECT name FROM app_item", dbname="app")] == [
            "once"
        ]
        assert Item.objects.using(alias).count() == 1
    finally:
        remove_database(alias)


def test_transaction_pooling_without_the_flag_still_reports_a_lost_lock(proxied_bouncer):
    pgbouncer, proxy = proxied_bouncer
    alias = _bouncer_alias(pgbouncer, proxy, pooling_flag=False)
    try:
        run("SELECT pg_advisory_lock(77)", using=alias)
        proxy.reset_all()
        with pytest.raises(SessionStateLost):
            Item.objects.using(alias).count()
        assert Item.objects.using(alias).count() == 0
    finally:
        remove_database(alias)


def test_transaction_pooling_with_the_flag_gives_no_false_session_state_lost(proxied_bouncer):
    """Behind a transaction pooler a SET does not outlive its transaction anyway."""
    pgbouncer, proxy = proxied_bouncer
    alias = _bouncer_alias(pgbouncer, proxy, pooling_flag=True)
    try:
        run("SET application_name = 'pooled'", using=alias)
        run("SELECT pg_advisory_lock(77)", using=alias)
        pgbouncer.restart()
        assert Item.objects.using(alias).count() == 0
    finally:
        remove_database(alias)
