"""A primary and its streaming replicas, to put code through a failover for real.

Each node is a ``PostgresServer`` of its own (directory, host, port, log), from the same
binaries. Replicas are made with ``pg_basebackup -R`` over the primary's Unix socket and
stream from it. The cluster remembers which node plays which role and takes, one call at a
time, the steps a failover manager (Patroni, repmgr, a cloud provider) takes: promote a
replica, make the other replicas follow it, and demote the old primary. Code under test sees
what it would see in production: a node that goes away, a node that turns writable, a node
that stays reachable but refuses writes.

Standard library only, plus the PostgreSQL binaries (``pg_basebackup`` included).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from . import _logs
from ._lifecycle import LabTool, close_once
from ._pg_config import primary_conninfo
from ._quoting import conninfo, literal
from .errors import ClusterError
from .server import PG_CTL_TIMEOUT, PostgresServer, StopMode

__all__ = ["ClusterError", "PostgresCluster"]

logger = logging.getLogger("django_postgresql_reconnect.testing")

#: What a node is to the cluster. ``detached``: a former primary, left as it was (running
#: or not) when another node was promoted, until ``demote()`` says what becomes of it.
Role = Literal["primary", "replica", "read-only", "detached"]
#: libpq's ``target_session_attrs`` values (``prefer-standby`` and the rest need libpq 14).
TargetSessionAttrs = Literal[
    "any", "read-write", "read-only", "primary", "standby", "prefer-standby"
]
#: ``demote(to=...)``: a fresh replica of the primary, or the node restarted read-only.
DemoteTo = Literal["replica", "read-only"]

#: Settings of every node. WAL is kept for a replica that was stopped a while; a replica
#: whose primary went away (or that was told to follow another) tries again within 0.2 s
#: rather than the default 5 s, so a test does not wait on it.
CLUSTER_SETTINGS = {
    "wal_keep_size": "128MB",
    "wal_retrieve_retry_interval": "200ms",
}
#: Seconds that wait_for_replay() gives the replicas by default.
REPLAY_TIMEOUT = 30.0
#: Seconds between two looks at a replica's replay position.
POLL_INTERVAL = 0.01


class PostgresCluster(LabTool):
    """A primary plus ``replicas`` streaming replicas; each node is a ``PostgresServer``.

    >>> with PostgresCluster(replicas=1) as cluster:
    ...     DATABASES = {"default": cluster.database_settings()}  # finds the primary
    ...     cluster.primary.stop("immediate")  # the primary dies
    ...     cluster.promote(cluster.replicas[0])  # a replica takes over
    """

    def __init__(
        self,
        replicas: int = 1,
        *,
        bindir: str | Path | None = None,
        host: str = "127.0.0.1",
        user: str = "postgres",
        password: str | None = None,
        auth: Literal["trust", "password"] = "trust",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if replicas < 0:
            raise ValueError(f"replicas cannot be negative, not {replicas}")
        settings = {**CLUSTER_SETTINGS, **(settings or {})}
        first = PostgresServer(
            bindir=bindir, host=host, user=user, password=password, auth=auth, settings=settings
        )
        # The others take the first node's resolved binaries and its password, which it
        # made up if auth="password" came without one: a replica is a copy of its roles.
        self._nodes = [first] + [
            PostgresServer(
                bindir=first.bindir,
                host=host,
                user=user,
                password=first.password,
                auth=auth,
                settings=settings,
            )
            for _ in range(replicas)
        ]
        self._roles: list[Role] = ["primary"]
        self._roles += ["replica"] * replicas
        self._created = False
        self._closed = False

    # -- who is who ------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[PostgresServer, ...]:
        """Every node, in a fixed order (the first one is the first primary)."""
        return tuple(self._nodes)

    @property
    def primary(self) -> PostgresServer:
        """The node that takes writes now; after ``promote()``, the promoted one."""
        for node, role in self._members():
            if role == "primary":
                return node
        raise ClusterError("the cluster has no primary now: promote() a replica")

    @property
    def replicas(self) -> list[PostgresServer]:
        """The nodes that stream from the primary now, in node order."""
        return [node for node, role in self._members() if role == "replica"]

    def role(self, node: PostgresServer) -> Role:
        """``primary``, ``replica``, ``read-only`` (demoted so) or ``detached`` (a former
        primary that no ``demote()`` has dealt with yet)."""
        return self._roles[self._index(node)]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first use (initdb, then a base backup per replica), or
        start its stopped nodes again; return once every replica has caught up.

        Detached nodes are left as they are: starting a former primary would make two.
        """
        if self._closed:
            raise ClusterError("this PostgresCluster was closed; make a new one")
        if not self._created:
            self._create()
            return
        order: tuple[Role, ...] = ("primary", "read-only", "replica")
        for wanted in order:
            for node, role in self._members():
                if role == wanted:
                    node.start()
        if any(role == "primary" for role in self._roles):
            self.wait_for_replay()

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop every node, replicas first; the data stays for ``start()``."""
        for node in sorted(self._nodes, key=lambda node: self.role(node) != "replica"):
            node.stop(mode)

    @close_once
    def close(self) -> None:
        """Stop every node at once and delete its directory; safe to call twice."""
        for node in self._nodes:
            node.close()

    def __repr__(self) -> str:
        nodes = " ".join(
            f"{self._name(node)}={role}@{node.port}{'' if node.is_running else '(stopped)'}"
            for node, role in self._members()
        )
        return f"<PostgresCluster {nodes}>"

    # -- failover --------------------------------------------------------------------------

    def promote(self, node: PostgresServer, *, timeout: float = PG_CTL_TIMEOUT) -> None:
        """Make a replica the primary; return once it accepts writes.

        The other replicas are told to follow it (they switch to its timeline). The former
        primary is left as it is, running or not, and becomes ``detached``: stop it first
        for a failover, or leave it running for a split brain; ``demote()`` it afterwards.
        """
        index = self._index(node)
        role = self._roles[index]
        if role == "primary":
            return
        if role != "replica":
            raise ClusterError(
                f"{self._name(node)} is {role}, not a replica: promoting it would lose the "
                "writes made since it left; demote(node, to='replica') makes it a replica"
            )
        if not node.is_running:
            raise ClusterError(f"{self._name(node)} is stopped: start() it before promote()")
        node.promote(timeout=timeout)
        for other, other_role in enumerate(self._roles):
            if other_role == "primary":
                self._roles[other] = "detached"
        self._roles[index] = "primary"
        for replica in self.replicas:
            # primary_conninfo is reloadable: the replica's WAL receiver restarts on it.
            source = primary_conninfo(node.socket_dir, node.port, node.user, self._name(replica))
            replica.configure({"primary_conninfo": source})
        logger.info("cluster: %s promoted; %r", self._name(node), self)

    def demote(self, node: PostgresServer, *, to: DemoteTo = "replica") -> None:
        """Turn a former primary (or any node that is not the primary) into one of:

        - ``to="replica"``: a fresh replica of the current primary. Its data directory is
          replaced by a new base backup (what ``pg_rewind`` or a rebuild does in
          production); it keeps its host and port, so connection strings still list it.
        - ``to="read-only"``: the node restarted on its own data with
          ``default_transaction_read_only = on``. It stays reachable and refuses writes
          (SQLSTATE 25006), as an old primary that was fenced but not rebuilt: libpq's
          ``target_session_attrs=read-write`` skips it. It does not replicate. Demoting
          the current primary this way leaves the cluster without one until ``promote()``.
        """
        if to not in get_args(DemoteTo):
            raise ValueError(f"to must be 'replica' or 'read-only', not {to!r}")
        index = self._index(node)
        role = self._roles[index]
        if role == to:
            return
        if to == "replica":
            primary = self.primary
            if primary is node:
                raise ClusterError(
                    f"{self._name(node)} is the primary: promote() another node first"
                )
            if not primary.is_running:
                raise ClusterError(f"the primary {self._name(primary)} is stopped: start() it")
            node.stop()
            node.clone_from(primary, application_name=self._name(node))
            node.start()
        else:
            if role == "replica":
                raise ClusterError(
                    f"{self._name(node)} is a replica, read-only already; demote a primary"
                )
            node.stop()
            node.configure({"default_transaction_read_only": "on"})
            node.start()
        self._roles[index] = to
        logger.info("cluster: %s demoted to %s; %r", self._name(node), to, self)

    def wait_for_replay(
        self, node: PostgresServer | None = None, *, timeout: float = REPLAY_TIMEOUT
    ) -> None:
        """Wait until ``node`` (or every replica) has replayed all WAL that the primary had
        flushed when called: then every commit made before the call is visible there."""
        primary = self.primary
        replicas = self.replicas if node is None else [node]
        for replica in replicas:
            if self.role(replica) != "replica":
                raise ClusterError(f"{self._name(replica)} is {self.role(replica)}, not a replica")
            if not replica.is_running:
                raise ClusterError(f"{self._name(replica)} is stopped: it replays nothing")
        # The flush position, not the insert one: every commit is flushed (synchronous_commit
        # is on), and a replica only ever receives WAL that the primary flushed.
        [(target,)] = primary.execute("SELECT pg_current_wal_flush_lsn()")
        deadline = time.monotonic() + timeout
        for replica in replicas:
            while replica.execute(
                f"SELECT pg_last_wal_replay_lsn() >= {literal(target)}::pg_lsn"
            ) != [("t",)]:
                if time.monotonic() > deadline:
                    raise ClusterError(self._lagging(replica, primary, target, timeout))
                time.sleep(POLL_INTERVAL)

    # -- for clients -----------------------------------------------------------------------

    def dsn(
        self,
        dbname: str | None = None,
        *,
        target_session_attrs: TargetSessionAttrs = "read-write",
    ) -> str:
        """A libpq connection string listing every node, for libpq to pick one by role."""
        first = self._nodes[0]
        return conninfo(
            {
                "host": ",".join(node.host for node in self._nodes),
                "port": ",".join(str(node.port) for node in self._nodes),
                "user": first.user,
                "dbname": dbname or first.dbname,
                "target_session_attrs": _checked(target_session_attrs),
                "password": first.password or None,
            }
        )

    def database_settings(
        self,
        *,
        target_session_attrs: TargetSessionAttrs = "read-write",
        engine: str = "django_postgresql_reconnect.backend",
        name: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A Django ``DATABASES`` entry that lists every node in HOST and PORT.

        libpq tries them in order and keeps the first that matches ``target_session_attrs``:
        ``read-write`` for the primary's alias (it follows a promotion), ``prefer-standby``,
        ``standby`` or ``any`` for a replica's. An ``OPTIONS`` override is merged over it.
        For one node alone, use that node's own ``database_settings()``.
        """
        first = self._nodes[0]
        options = {
            "target_session_attrs": _checked(target_session_attrs),
            **overrides.pop("OPTIONS", {}),
        }
        return {
            "ENGINE": engine,
            "NAME": name or first.dbname,
            "USER": first.user,
            "PASSWORD": first.password or "",
            "HOST": ",".join(node.host for node in self._nodes),
            "PORT": ",".join(str(node.port) for node in self._nodes),
            "OPTIONS": options,
            **overrides,
        }

    # -- internals -------------------------------------------------------------------------

    def _create(self) -> None:
        primary = self._nodes[0]
        primary.start()
        for replica in self._nodes[1:]:
            replica.clone_from(primary, application_name=self._name(replica))
            replica.start()
        self._created = True
        self.wait_for_replay()
        logger.info("cluster up: %r", self)

    def _members(self) -> list[tuple[PostgresServer, Role]]:
        return list(zip(self._nodes, self._roles, strict=True))

    def _index(self, node: PostgresServer) -> int:
        for index, candidate in enumerate(self._nodes):
            if candidate is node:
                return index
        raise ClusterError(f"{node!r} is not a node of this cluster")

    def _name(self, node: PostgresServer) -> str:
        """The node's name in messages, and its application_name as a replica."""
        return f"node{self._index(node)}"

    def _lagging(
        self, replica: PostgresServer, primary: PostgresServer, target: str, timeout: float
    ) -> str:
        [(replayed, receiver)] = replica.execute(
            "SELECT pg_last_wal_replay_lsn(),"
            " (SELECT status || ' from ' || coalesce(sender_host, '?') FROM pg_stat_wal_receiver)"
        )
        log = _logs.read_from(replica.logfile, 0)
        return (
            f"{self._name(replica)} replayed up to {replayed or '?'}, not {target} (flushed on "
            f"the primary {self._name(primary)}), within {timeout} s; its WAL receiver: "
            f"{receiver or 'not running'}\n{_logs.last_lines(replica.logfile, log, lines=15)}"
        )


def _checked(target_session_attrs: str) -> str:
    if target_session_attrs not in get_args(TargetSessionAttrs):
        raise ValueError(
            f"target_session_attrs must be one of {', '.join(get_args(TargetSessionAttrs))}, "
            f"not {target_session_attrs!r}"
        )
    return target_session_attrs
