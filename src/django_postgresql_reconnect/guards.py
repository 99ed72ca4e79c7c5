"""Checks run before a unit of work: the middleware, the decorator, check_pgsql_connections().

These are the names django-postgresql-reconnect 1.2.0 documented. They replace a dead
connection before the unit of work starts, so its first statement never meets one; the engine
covers everything after that. A warm connection costs one poll(2) per alias, no round trip;
one idle for longer than ``IDLE_CHECK_AFTER`` gets one empty query (the liveness rule).

Which connections to look at is kept per thread, fed by Django's ``connection_created``
signal: asking ``django.db.connections`` instead costs a few microseconds per alias on every
call, which is more than the check itself and more than the 2 % a decorated call may cost.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, overload

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.db import connections
from django.db.backends.signals import connection_created
from django.utils.connection import ConnectionDoesNotExist

from .mixin import ReconnectMixin

__all__ = ["ReconnectMiddleware", "check_pgsql_connections", "reconnect"]

F = TypeVar("F", bound=Callable[..., Any])


# --- Which connections this thread holds --------------------------------------------------------

_thread = threading.local()


def _opened() -> dict[str, ReconnectMixin]:
    """This thread's wrappers of this engine that opened a connection, by alias."""
    try:
        opened: dict[str, ReconnectMixin] = _thread.opened
    except AttributeError:
        # First use in this thread: wrappers may have connected before this module was
        # imported, so start from what the thread already holds; the signal adds the rest.
        opened = _thread.opened = {
            c.alias: c
            for c in connections.all(initialized_only=True)
            if isinstance(c, ReconnectMixin)
        }
    return opened


def _note_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    if isinstance(connection, ReconnectMixin):
        _opened()[connection.alias] = connection


connection_created.connect(_note_connection, dispatch_uid="django_postgresql_reconnect.guards")


def _aliases(using: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if using is None:
        return None
    return (using,) if isinstance(using, str) else tuple(using)


def _check(aliases: tuple[str, ...] | None) -> None:
    """Replace this thread's dead connections: all of this engine's, or those of ``aliases``."""
    opened = _opened()
    if aliases is None:
        for wrapper in list(opened.values()):
            wrapper.ensure_usable()
        return
    for alias in aliases:
        named = opened.get(alias)
        if named is not None:
            named.ensure_usable()
        elif alias not in connections.settings:
            raise ConnectionDoesNotExist(f"The connection '{alias}' doesn't exist.")
        # Otherwise no connection is open for it in this thread: the first statement opens
        # one, with the engine's connect retry.


def check_pgsql_connections(using: str | Iterable[str] | None = None) -> None:
    """Replace every dead connection of this engine now (all aliases in use, or ``using``).

    Afterwards each alias of this engine either holds a live connection or none, in which case
    its first statement opens one. Outside a transaction only: inside one, replacing the
    connection would break atomicity, and the engine reports the loss from the next statement.
    """
    _check(_aliases(using))


class ReconnectMiddleware:
    """Check this engine's connections before each request; sync and async capable.

    Under ASGI the check runs in the thread that will run the view's ORM calls, never on the
    event loop: a replacement connection may take a while to open.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        _check(None)
        return self.get_response(request)

    async def __acall__(self, request: Any) -> Any:
        await _acheck(None)
        return await self.get_response(request)


async def _acheck(aliases: tuple[str, ...] | None) -> None:
    # thread_sensitive: the connections to check live in the thread that runs the caller's
    # sync_to_async ORM calls, which is the thread-sensitive one.
    await sync_to_async(_check, thread_sensitive=True)(aliases)


class reconnect:
    """Check connections before a function runs or a block starts; bare or with arguments.

    ``@reconnect``, ``@reconnect(using="replica")``, on sync or async functions, or
    ``with reconnect(): ...`` (``async with`` in async code) at the top of each turn of a
    worker loop.
    """

    @overload
    def __new__(cls, func: F, *, using: str | Iterable[str] | None = None) -> F: ...  # type: ignore[misc]

    @overload
    def __new__(
        cls, func: None = None, *, using: str | Iterable[str] | None = None
    ) -> reconnect: ...

    def __new__(cls, func: Any = None, *, using: str | Iterable[str] | None = None) -> Any:
        self = super().__new__(cls)
        self.using = using
        self._aliases = _aliases(using)
        if func is not None:
            return self(func)
        return self

    using: str | Iterable[str] | None
    _aliases: tuple[str, ...] | None

    def __enter__(self) -> None:
        _check(self._aliases)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def __aenter__(self) -> None:
        await _acheck(self._aliases)

    async def __aexit__(self, *exc_info: Any) -> None:
        return None

    def __call__(self, func: F) -> F:
        if not callable(func):
            raise TypeError(
                f"reconnect() decorates a function, not {type(func).__name__}; write "
                "@reconnect, @reconnect(using='alias') or 'with reconnect():'"
            )
        aliases = self._aliases
        if inspect.iscoroutinefunction(func) or iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                await _acheck(aliases)
                result: Awaitable[Any] = func(*args, **kwargs)
                return await result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _check(aliases)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
