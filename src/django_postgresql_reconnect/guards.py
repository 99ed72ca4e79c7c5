"""Checks run before a unit of work: the middleware, the decorator, check_pgsql_connections().

These are the names django-postgresql-reconnect 1.2.0 documented. They replace a dead
connection before the unit of work starts, so its first statement never meets one; the engine
covers everything after that. A warm connection costs one poll(2) per alias, no round trip.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, overload

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.db import connections

from .mixin import ReconnectMixin

__all__ = ["ReconnectMiddleware", "check_pgsql_connections", "reconnect"]

F = TypeVar("F", bound=Callable[..., Any])


def _wrappers(using: str | Iterable[str] | None) -> list[ReconnectMixin]:
    if using is None:
        candidates = connections.all(initialized_only=True)
    else:
        names = [using] if isinstance(using, str) else list(using)
        candidates = [connections[name] for name in names]
    return [c for c in candidates if isinstance(c, ReconnectMixin)]


def check_pgsql_connections(using: str | Iterable[str] | None = None) -> None:
    """Replace every dead connection of this engine now (all aliases in use, or ``using``).

    Outside a transaction only: inside one, replacing the connection would break atomicity,
    and the engine reports the loss from the next statement instead.
    """
    for wrapper in _wrappers(using):
        wrapper.ensure_usable()


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
        check_pgsql_connections()
        return self.get_response(request)

    async def __acall__(self, request: Any) -> Any:
        await sync_to_async(check_pgsql_connections, thread_sensitive=True)()
        return await self.get_response(request)


class reconnect:
    """Check connections before a function runs or a block starts; bare or with arguments.

    ``@reconnect``, ``@reconnect(using="replica")``, on sync or async functions, or
    ``with reconnect(): ...`` at the top of each turn of a worker loop.
    """

    @overload
    def __new__(cls, func: F, *, using: str | Iterable[str] | None = None) -> F: ...  # type: ignore[misc]

    @overload
    def __new__(cls, func: None = None, *, using: str | Iterable[str] | None = None) -> reconnect: ...

    def __new__(cls, func: Any = None, *, using: str | Iterable[str] | None = None) -> Any:
        self = super().__new__(cls)
        self.using = using
        if func is not None:
            return self(func)
        return self

    using: str | Iterable[str] | None

    def __enter__(self) -> None:
        check_pgsql_connections(self.using)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def __aenter__(self) -> None:
        await sync_to_async(check_pgsql_connections, thread_sensitive=True)(self.using)

    async def __aexit__(self, *exc_info: Any) -> None:
        return None

    def __call__(self, func: F) -> F:
        using = self.using
        if inspect.iscoroutinefunction(func) or iscoroutinefunction(func):
            check = sync_to_async(check_pgsql_connections, thread_sensitive=True)

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                await check(using)
                result: Awaitable[Any] = func(*args, **kwargs)
                return await result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check_pgsql_connections(using)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
