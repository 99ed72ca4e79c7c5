"""PostgresCluster: a primary and streaming replicas that a test can fail over for real."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from django_postgresql_reconnect.testing import ClusterError, PostgresCluster, PostgresServer

from ._client import Error, connect, query


@pytest.fixture(scope="module")
def steady() -> Iterator[PostgresCluster]:
    """A cluster that no test fails over: for replication and settings."""
    with PostgresCluster(replicas=2) as cluster:
        cluster.primary.execute("CREATE TABLE item (name text)")
        yield cluster


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A primary and one replica of the test's own, to fail over."""
    with PostgresCluster(replicas=1) as cluster:
        cluster.primary.execute("CREATE TABLE item (name text)")
        cluster.wait_for_replay()
        yield cluster


def port_of(connection: Any) -> int:
    [(port,)] = query(connection, "SELECT current_setting('port')::int")
    return int(port)


def names(node: PostgresServer) -> list[str]:
    return [row[0] for row in node.execute("SELECT name FROM item ORDER BY name")]


def fail_over(cluster: PostgresCluster) -> tuple[PostgresServer, PostgresServer]:
    """Crash the primary and promote the replica; return (old primary, new primary)."""
    old, new = cluster.primary, cluster.replicas[0]
    old.stop("immediate")
    cluster.promote(new)
    return old, new


def test_rows_written_on_the_primary_appear_on_every_replica(steady: PostgresCluster) -> None:
    steady.primary.execute("INSERT INTO item VALUES ('replicated')")

    steady.wait_for_replay()

    assert len(steady.replicas) == 2
    for replica in steady.replicas:
        assert names(replica) == ["replicated"]
        assert replica.execute("SELECT pg_is_in_recovery()") == [("t",)]


def test_wait_for_replay_says_which_replica_lags_and_why(steady: PostgresCluster) -> None:
    lagging = steady.replicas[1]
    lagging.execute("SELECT pg_wal_replay_pause()")  # it receives WAL but applies none
    try:
        steady.primary.execute("INSERT INTO item VALUES ('not yet applied')")
        with pytest.raises(ClusterError, match=r"(?s)node2 replayed up to .*streaming"):
            steady.wait_for_replay(timeout=0.3)
    finally:
        lagging.execute("SELECT pg_wal_replay_resume()")
    steady.wait_for_replay()
    assert "not yet applied" in names(lagging)


def test_a_replica_refuses_writes(steady: PostgresCluster) -> None:
    with pytest.raises(Error, match="read-only"):
        query(connect(steady.replicas[0].dsn()), "INSERT INTO item VALUES ('refused')")


def test_settings_list_every_node_with_the_session_attributes(steady: PostgresCluster) -> None:
    primary_alias = steady.database_settings(name="app", CONN_MAX_AGE=None)
    replica_alias = steady.database_settings(
        target_session_attrs="prefer-standby", OPTIONS={"sslmode": "disable"}
    )

    hosts = ",".join(node.host for node in steady.nodes)
    ports = ",".join(str(node.port) for node in steady.nodes)
    assert (primary_alias["HOST"], primary_alias["PORT"]) == (hosts, ports)
    assert primary_alias["OPTIONS"] == {"target_session_attrs": "read-write"}
    assert (primary_alias["NAME"], primary_alias["CONN_MAX_AGE"]) == ("app", None)
    assert replica_alias["OPTIONS"] == {
        "target_session_attrs": "prefer-standby",
        "sslmode": "disable",
    }
    with pytest.raises(ValueError, match="target_session_attrs"):
        steady.database_settings(target_session_attrs="replica")  # type: ignore[arg-type]


def test_libpq_picks_the_node_by_role(steady: PostgresCluster) -> None:
    writer = connect(steady.dsn(target_session_attrs="read-write"))
    reader = connect(steady.dsn(target_session_attrs="standby"))

    assert port_of(writer) == steady.primary.port
    assert port_of(reader) in [replica.port for replica in steady.replicas]


def test_stop_then_start_brings_every_node_back_streaming(steady: PostgresCluster) -> None:
    steady.stop()
    assert not any(node.is_running for node in steady.nodes)

    steady.start()
    steady.primary.execute("INSERT INTO item VALUES ('after restart')")
    steady.wait_for_replay()

    assert all("after restart" in names(replica) for replica in steady.replicas)


def test_promote_makes_the_replica_take_writes(cluster: PostgresCluster) -> None:
    old, new = fail_over(cluster)

    connection = connect(new.dsn())
    query(connection, "INSERT INTO item VALUES ('on the new primary')")

    assert cluster.primary is new
    assert cluster.role(old) == "detached"
    assert names(new) == ["on the new primary"]


def test_the_other_replicas_follow_the_promoted_one() -> None:
    with PostgresCluster(replicas=2) as cluster:
        _, new = fail_over(cluster)
        (follower,) = cluster.replicas

        new.execute("CREATE TABLE after_failover (x int); INSERT INTO after_failover VALUES (1)")
        cluster.wait_for_replay()

        assert follower.execute("SELECT x FROM after_failover") == [("1",)]


def test_a_read_write_connection_string_finds_the_new_primary(cluster: PostgresCluster) -> None:
    dsn = cluster.dsn(target_session_attrs="read-write")
    assert port_of(connect(dsn)) == cluster.primary.port

    _, new = fail_over(cluster)

    connection = connect(dsn)  # the same string: libpq skips the dead node, then finds it
    assert port_of(connection) == new.port
    query(connection, "INSERT INTO item VALUES ('found')")
    assert names(new) == ["found"]


def test_demote_to_replica_rebuilds_the_old_primary_from_the_new_one(
    cluster: PostgresCluster,
) -> None:
    old, new = fail_over(cluster)
    port = old.port

    cluster.demote(old, to="replica")
    new.execute("INSERT INTO item VALUES ('written after the failover')")
    cluster.wait_for_replay()

    assert cluster.replicas == [old] and old.port == port
    assert old.execute("SELECT pg_is_in_recovery()") == [("t",)]
    assert names(old) == ["written after the failover"]


def test_demote_to_read_only_keeps_the_old_primary_up_but_refusing_writes(
    cluster: PostgresCluster,
) -> None:
    old, new = cluster.primary, cluster.replicas[0]
    cluster.promote(new)  # the old primary still runs: two nodes take writes
    assert cluster.role(old) == "detached"

    cluster.demote(old, to="read-only")

    assert old.is_running and cluster.role(old) == "read-only"
    with pytest.raises(Error, match="read-only"):
        query(connect(old.dsn()), "INSERT INTO item VALUES ('refused')")
    # It is first in the list and answers, yet libpq moves on to the primary.
    assert port_of(connect(cluster.dsn(target_session_attrs="read-write"))) == new.port
    with pytest.raises(ClusterError, match="not a replica"):
        cluster.promote(old)
