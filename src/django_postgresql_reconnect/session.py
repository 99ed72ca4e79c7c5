"""What a session holds beyond its connection, and what a new connection can be given of it.

Plain Python with no Django import. The log is fed the effects that ``statements.py`` reads
off each statement, with the statement's text and parameters. It keeps two things:

- **settings** (SET, RESET, ``set_config(..., false)``, SET ROLE, LOAD): replayed in order on
  a new connection, so that a tenant's ``search_path`` survives a reconnect. Only the last
  statement per setting is kept, so the log stays small however often the app sets it.
- **state** that cannot be given to a new connection truthfully (advisory locks, LISTEN,
  temporary objects, prepared statements, held cursors, dblink connections): reported with
  ``SessionStateLost`` instead.

PostgreSQL undoes a SET, a LISTEN or a CREATE TEMP made in a transaction that rolls back (or
in a savepoint rolled back to), so those effects are pending until the transaction commits.
Advisory locks, prepared statements and dblink connections are not transactional: they count
at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import statements as st

__all__ = ["Replay", "SessionLog"]

Replay = tuple[str, Any]
"""A statement to run again on a new connection: (sql, params)."""

# Effects that take hold at once, even inside a transaction that later rolls back.
_NOT_TRANSACTIONAL = frozenset(
    {
        st.ADVISORY_LOCK, st.UNLOCK_ALL, st.PREPARED, st.DEALLOCATE, st.DBLINK,
        st.RANDOM_SEED, st.UNREADABLE, st.LOAD, st.SETTING_IN_LARGER_STATEMENT,
    }
)  # fmt: skip
_TRANSACTION_CONTROL = frozenset(
    {st.BEGIN, st.COMMIT, st.ROLLBACK, st.SAVEPOINT, st.RELEASE, st.ROLLBACK_TO}
)
# GUC_NO_RESET_ALL: RESET ALL leaves these alone.
_SURVIVE_RESET_ALL = frozenset({"role", "session_authorization"})

_DESCRIPTIONS = {
    st.ADVISORY_LOCK: "an advisory lock",
    st.LISTEN: "LISTEN on {}",
    st.TEMPORARY: "temporary tables or other temporary objects",
    st.PREPARED: "prepared statement {}",
    st.HELD_CURSOR: "held cursor {}",
    st.DBLINK: "a dblink connection",
    st.RANDOM_SEED: "the random seed (setseed)",
    st.UNREADABLE: "whatever a statement the engine could not read left in the session",
    st.SETTING_IN_LARGER_STATEMENT: "a set_config() made by a statement that did more",
}

_Op = tuple[st.Effect, str, str, Any]  # (effect, name, sql, params)


class SessionLog:
    """The session-level effects of one connection's statements, folded as they commit."""

    def __init__(self) -> None:
        self.settings: dict[str, Replay] = {}
        self.state: dict[str, set[str]] = {}
        self._pending: list[_Op] = []
        self._savepoints: list[tuple[str, int]] = []
        self.notified = False
        """A NOTIFY is pending in the open transaction (it needs an xid to be committed)."""

    def __bool__(self) -> bool:
        return bool(self.settings or self.state or self._pending)

    # --- Feeding -------------------------------------------------------------------------------

    def record(
        self, effects: Iterable[st.Effect], sql: str, params: Any, *, in_transaction: bool
    ) -> None:
        """Note what a statement that succeeded did; ``in_transaction`` is the driver's status
        after it (so a statement that committed by itself counts at once)."""
        for effect in effects:
            kind = effect.kind
            if kind in _TRANSACTION_CONTROL:
                self._transaction_control(kind, effect.name)
                continue
            if kind == st.NOTIFY:
                self.notified = in_transaction
                continue
            op: _Op = (effect, st.render_effect_name(effect, params), sql, params)
            if in_transaction and kind not in _NOT_TRANSACTIONAL:
                self._pending.append(op)
            else:
                self._apply(op)

    def commit(self) -> None:
        for op in self._pending:
            self._apply(op)
        self._end_transaction()

    def rollback(self) -> None:
        self._end_transaction()

    def _end_transaction(self) -> None:
        self._pending.clear()
        self._savepoints.clear()
        self.notified = False

    def _transaction_control(self, kind: str, name: str) -> None:
        if kind == st.COMMIT:
            self.commit()
        elif kind == st.ROLLBACK:
            self.rollback()
        elif kind == st.SAVEPOINT:
            self._savepoints.append((name, len(self._pending)))
        elif kind in (st.RELEASE, st.ROLLBACK_TO):
            for index in range(len(self._savepoints) - 1, -1, -1):
                if self._savepoints[index][0] == name:
                    mark = self._savepoints[index][1]
                    if kind == st.RELEASE:
                        del self._savepoints[index:]
                    else:
                        del self._savepoints[index + 1 :]
                        del self._pending[mark:]
                    break

    def _apply(self, op: _Op) -> None:
        effect, name, sql, params = op
        kind = effect.kind
        if kind == st.SETTING:
            self.settings.pop(name, None)
            if not sql.lstrip().upper().startswith("RESET"):
                self.settings[name] = (sql, params)  # RESET returns to what a new one has
        elif kind == st.LOAD:
            self.settings["load " + name] = (sql, params)
        elif kind == st.RESET_ALL:
            for key in list(self.settings):
                if key not in _SURVIVE_RESET_ALL:
                    del self.settings[key]
        elif kind == st.DISCARD_ALL:
            self.settings.clear()
            self.state.clear()
        elif kind == st.DISCARD_TEMP:
            self.state.pop(st.TEMPORARY, None)
        elif kind == st.UNLOCK_ALL:
            self.state.pop(st.ADVISORY_LOCK, None)
        elif kind in (st.UNLISTEN, st.DEALLOCATE, st.CLOSE_CURSOR):
            held = {st.UNLISTEN: st.LISTEN, st.DEALLOCATE: st.PREPARED}.get(kind, st.HELD_CURSOR)
            names = self.state.get(held, set())
            if name == "*":
                names.clear()
            else:
                names.discard(name)
            if not names:
                self.state.pop(held, None)
        else:
            self.state.setdefault(kind, set()).add(name)

    # --- Reading ---------------------------------------------------------------------------------

    def replay(self) -> list[Replay]:
        """The settings to give a new connection, in the order they were made."""
        return list(self.settings.values())

    def setting_names(self) -> list[str]:
        return list(self.settings)

    def lost_state(self) -> tuple[str, ...]:
        """What a new connection cannot be given, in words for a message (empty when none)."""
        described = []
        for kind, names in self.state.items():
            template = _DESCRIPTIONS.get(kind, kind)
            if "{}" in template:
                shown = ", ".join(sorted(repr(n) for n in names if n)) or "?"
                described.append(template.format(shown))
            else:
                described.append(template)
        return tuple(described)

    def after_loss(self) -> SessionLog:
        """The log a replacement connection starts with: the durable settings only.

        The open transaction died with the connection, and with it whatever it had pending;
        state that cannot be restored was reported (or is being) and is not carried.
        """
        carried = SessionLog()
        carried.settings = dict(self.settings)
        return carried
