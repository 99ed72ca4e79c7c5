"""The cursor wrapper: each statement asks one question, and a loss goes to ``recovery``.

The question is "is this connection safe to send on?": the connection is the one this cursor
was made on, it was used a moment ago (or checked since), its socket shows nothing, and the
driver does not call it broken. Then the statement runs exactly as Django runs it, and the
only bookkeeping after it is one dictionary look-up (did it change the session?). Anything
else, and any error, goes to :func:`recovery.run`.

Every other way a statement reaches the server goes through the engine too: ``executemany``
(its parameters recorded as they are consumed, so a re-run gets them all), ``callproc``,
COPY (psycopg 3's ``cursor.copy()``, psycopg2's ``copy_expert``, ``copy_from`` and
``copy_to``) and the fetches of server-side cursors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from django.db import DatabaseError
from django.db.backends.postgresql.base import CursorDebugWrapper as PostgresDebugWrapper
from django.db.backends.utils import CursorWrapper

from . import drivers, recovery
from .exceptions import StatementInterrupted, TransactionLost
from .policy import Loss, Statement
from .recovery import Request
from .statements import CLOSE_CURSOR, HELD_CURSOR, Effect, _effects_cache, effects_of

__all__ = ["ReconnectCursorDebugWrapper", "ReconnectCursorWrapper", "wrapper_class"]

_monotonic = time.monotonic
_PG3 = drivers.IS_PSYCOPG3
_MISSING: tuple[Any, ...] = ("not looked up",)

# Django's own methods, called unbound: neither debug wrapper overrides them, and this spares
# building a super() proxy and a bound method for every statement.
_run_one = CursorWrapper._execute  # type: ignore[attr-defined]
_run_many = CursorWrapper._executemany  # type: ignore[attr-defined]
_END = object()


class _Reconnecting:
    """Route every statement of a cursor wrapper through the engine."""

    db: Any
    cursor: Any
    _link: Any

    def _execute(self, sql: Any, params: Any, *ignored_wrapper_args: Any) -> Any:
        """The path of nearly every statement, written out flat: it runs once per query and
        its cost is measured against stock Django (benchmarks/overhead.py)."""
        link = self._link
        now = _monotonic()
        if (
            link.current
            and now < link.check_after
            and not link.poll(0)
            and not (link.connection.pgconn.status if _PG3 else link.connection.closed)
        ):
            db = self.db
            started = not db.autocommit and (
                link.connection.pgconn.transaction_status
                if _PG3
                else link.connection.get_transaction_status()
            )
            try:
                result = _run_one(self, sql, params, *ignored_wrapper_args)
            except DatabaseError as error:
                return self._recover(error, bool(started), sql, params, ignored_wrapper_args)
            link.check_after = now + link.idle_after
            effects = _effects_cache.get(sql, _MISSING) if type(sql) is str else _MISSING
            if effects:
                recovery.note_success(db, link, _text(sql, db), params)
            return result
        return recovery.run(self.db, self, self._request(sql, params, ignored_wrapper_args))

    def _request(self, sql: Any, params: Any, extra: tuple[Any, ...]) -> Request:
        return Request(
            run=lambda: _run_one(self, sql, params, *extra),
            text=_text(sql, self.db),
            params=params,
        )

    def _recover(
        self, error: DatabaseError, started: bool, sql: Any, params: Any, extra: tuple[Any, ...]
    ) -> Any:
        db = self.db
        request = self._request(sql, params, extra)
        call = recovery.new_call(db)
        recovery.after_error(db, self, error, started, request, call)
        return recovery.run(db, self, request, call)

    def _executemany(self, sql: Any, param_list: Any, *ignored_wrapper_args: Any) -> Any:
        params = param_list
        prepare = None
        if not isinstance(param_list, (list, tuple)):
            # Rule 12: an iterator can be consumed once. Record its items as the driver takes
            # them, so that a re-run (a transaction reopened after a loss) gets every one.
            params = _Recorded(param_list)
            prepare = params.rewind
        request = Request(
            run=lambda: _run_many(self, sql, params, *ignored_wrapper_args),
            text=_text(sql, self.db),
            params=None,
            prepare_rerun=prepare,
        )
        return recovery.run(self.db, self, request)

    def callproc(self, procname: Any, params: Any = None, kparams: Any = None) -> Any:
        name = (
            procname if isinstance(procname, str) else drivers.render(procname, self.db.connection)
        )
        request = Request(
            run=lambda: CursorWrapper.callproc(self, procname, params, kparams),  # type: ignore[arg-type]
            text=None
            if name is None
            else f"SELECT * FROM {name}({', '.join(['%s'] * len(params or ()))})",
            params=params,
        )
        return recovery.run(self.db, self, request)

    # --- COPY (each driver's own methods only, so that feature checks see what stock shows) ---

    if _PG3:

        def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
            """psycopg 3's ``cursor.copy()``, as a context manager guarded by the engine."""
            return _GuardedCopy(self, statement, params, kwargs)

        def _driver_copy(self, statement: Any, params: Any, kwargs: dict[str, Any]) -> Any:
            parent = getattr(super(), "copy", None)  # Django's debug wrapper logs it
            if parent is not None and params is None and not kwargs:
                return parent(statement)
            if params is None and not kwargs:
                return self.cursor.copy(statement)
            return self.cursor.copy(statement, params, **kwargs)

    else:

        def copy_expert(self, sql: str, file: Any, *args: Any) -> Any:
            parent = getattr(super(), "copy_expert", None)  # Django's debug wrapper logs it

            def run() -> Any:  # the driver cursor is looked up late: rule 1 may replace it
                return (parent or self.cursor.copy_expert)(sql, file, *args)

            return self._stream(run, sql, writes=_copies_in(sql))

        def copy_from(self, file: Any, table: str, *args: Any, **kwargs: Any) -> Any:
            return self._stream(
                lambda: self.cursor.copy_from(file, table, *args, **kwargs),
                f"COPY {table} FROM STDIN",
                writes=True,
            )

        def copy_to(self, file: Any, table: str, *args: Any, **kwargs: Any) -> Any:
            parent = getattr(super(), "copy_to", None)

            def run() -> Any:
                return (parent or self.cursor.copy_to)(file, table, *args, **kwargs)

            return self._stream(run, f"COPY {table} TO STDOUT", writes=False)

    def _stream(self, run: Any, text: str, *, writes: bool) -> Any:
        db = self.db

        def guarded() -> Any:
            with db.wrap_database_errors:
                return run()

        request = Request(run=guarded, text=text, statement=Statement.STREAM, writes=writes)
        return recovery.run(db, self, request, raw_errors=True)

    # --- Server-side cursors ------------------------------------------------------------------

    def fetchone(self) -> Any:
        return self._fetch(lambda: self.cursor.fetchone())

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        return self._fetch(lambda: self.cursor.fetchmany(*args, **kwargs))

    def fetchall(self) -> Any:
        return self._fetch(lambda: self.cursor.fetchall())

    def _fetch(self, fetch: Any) -> Any:
        with self.db.wrap_database_errors:
            return fetch()

    def close(self) -> Any:
        return self.cursor.close()


class _ServerSide(_Reconnecting):
    """A named (server-side) cursor: its fetches are round trips, so they are guarded too.

    Its statements always take the engine's full path: the DECLARE of a held cursor is
    session state, and a cursor that lost its connection must not be silently re-declared.
    """

    def _execute(self, sql: Any, params: Any, *ignored_wrapper_args: Any) -> Any:
        request = self._request(sql, params, ignored_wrapper_args)
        result = recovery.run(self.db, self, request)
        if self._held():
            recovery.record_effects(
                self.db, self._link, (Effect(HELD_CURSOR, self.cursor.name),), "", None
            )
        return result

    def _held(self) -> bool:
        return bool(getattr(self.cursor, "withhold", False))

    def _fetch(self, fetch: Any) -> Any:
        return _fetch_from_server_cursor(self.db, self, fetch, self.cursor.name)

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.cursor)
        while True:
            row = self._fetch(lambda: next(iterator, _END))
            if row is _END:
                return
            yield row

    def close(self) -> Any:
        if self._held() and self._link is self.db._reconnect.link:
            recovery.record_effects(
                self.db, self._link, (Effect(CLOSE_CURSOR, self.cursor.name),), "", None
            )
        return self.cursor.close()


class _GuardedCopy:
    """psycopg 3's COPY context manager, with rule 1 before it and the engine's answers on a
    loss inside it. Nothing of it is run again once data crossed (rule 11)."""

    def __init__(self, wrapper: _Reconnecting, statement: Any, params: Any, kwargs: Any) -> None:
        self._wrapper = wrapper
        self._statement = statement
        self._params = params
        self._kwargs = kwargs
        self._text = _text(statement, wrapper.db) or ""
        self._writes = _copies_in(self._text)
        self._driver: Any = None
        self._finishing = False

    def __enter__(self) -> Any:
        wrapper = self._wrapper
        db = wrapper.db

        def open_copy() -> Any:
            with db.wrap_database_errors:
                self._driver = wrapper._driver_copy(self._statement, self._params, self._kwargs)
                return self._driver.__enter__()

        request = self._request(open_copy)
        return recovery.run(db, wrapper, request, raw_errors=True)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        wrapper = self._wrapper
        db = wrapper.db
        self._finishing = exc_type is None
        try:
            suppressed = self._driver.__exit__(exc_type, exc, tb)
        except BaseException as raised:
            failure: BaseException | None = raised
        else:
            failure = None if exc is None or suppressed else exc
        if failure is None:
            recovery.note_success(db, wrapper._link, self._text, self._params)
            return suppressed
        if isinstance(failure, db.Database.Error):
            _stream_failed(db, wrapper, failure, self._request(None))
        if failure is exc:
            return False
        raise failure

    def _request(self, run: Any) -> Request:
        return Request(
            run=run,
            text=self._text,
            statement=Statement.STREAM,
            writes=self._writes,
            finishing=lambda: self._finishing,
        )


class _Recorded:
    """Iterates the caller's parameters once, keeping what it gave, to give it all again."""

    def __init__(self, source: Any) -> None:
        self._source = iter(source)
        self._seen: list[Any] = []
        self._replay = 0

    def rewind(self) -> None:
        self._replay = len(self._seen)

    def __iter__(self) -> Iterator[Any]:
        replay, self._replay = self._replay, 0
        yield from self._seen[:replay]
        for item in self._source:
            self._seen.append(item)
            yield item


# --- Losses of streams (rule 11) ------------------------------------------------------------


def _fetch_from_server_cursor(
    db: Any, wrapper: Any, fetch_rows: Callable[[], Any], name: str
) -> Any:
    """A fetch from a server-side cursor: a round trip whose cursor dies with its connection."""
    request = Request(
        run=fetch_rows,
        text=None,
        statement=Statement.STREAM,
        cursor_name=name,
        finishing=lambda: False,
    )
    link = wrapper._link
    if not link.current or link.inherited:
        # Another statement already replaced the connection: this cursor is gone with it.
        if db.in_atomic_block:
            raise TransactionLost(alias=db.alias, reason=" (its server-side cursor with it)")
        raise StatementInterrupted(alias=db.alias)
    if link.peer_gone():
        # Its connection died since the last fetch: the cursor died with it (rule 11).
        in_transaction = not db.autocommit
        loss = Loss(Statement.STREAM, True, in_transaction, in_transaction, finishing=False)
        recovery.handle(db, wrapper, None, loss, recovery.new_call(db), request=request)
    try:
        with db.wrap_database_errors:
            return fetch_rows()
    except DatabaseError as error:
        recovery.after_error(db, wrapper, error, True, request)
        raise AssertionError("a stream is never run again") from error


def _stream_failed(db: Any, wrapper: Any, error: BaseException, request: Request) -> None:
    """A COPY failed while its data streamed: raise what the loss means, or return (no loss)."""
    if not db._lost_by(error):
        return
    wrapped = DatabaseError(str(error))
    wrapped.__cause__ = error
    recovery.after_error(db, wrapper, wrapped, True, request)


def _copies_in(sql: str) -> bool:
    words = sql.upper().split()
    return "FROM" in words and "STDIN" in " ".join(words)


def _text(sql: Any, db: Any) -> str | None:
    if type(sql) is str:
        return sql
    return drivers.render(sql, db.connection)


class ReconnectCursorWrapper(_Reconnecting, CursorWrapper):
    pass


class ReconnectCursorDebugWrapper(_Reconnecting, PostgresDebugWrapper):
    pass


class ReconnectServerCursorWrapper(_ServerSide, CursorWrapper):
    pass


class ReconnectServerCursorDebugWrapper(_ServerSide, PostgresDebugWrapper):
    pass


if _PG3:
    from psycopg import ServerCursor as _ServerCursor

    def _named(cursor: Any) -> bool:
        return isinstance(cursor, _ServerCursor)

else:

    def _named(cursor: Any) -> bool:
        return cursor.name is not None  # psycopg2 gives every cursor a name, None or not


def wrapper_class(cursor: Any, *, debug: bool) -> type[CursorWrapper]:
    if _named(cursor):
        return ReconnectServerCursorDebugWrapper if debug else ReconnectServerCursorWrapper
    return ReconnectCursorDebugWrapper if debug else ReconnectCursorWrapper


__all__ += ["effects_of"]
