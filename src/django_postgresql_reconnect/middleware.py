"""1.2.0's ``django_postgresql_reconnect.middleware``, still working both ways it was used.

``MIDDLEWARE = ["django_postgresql_reconnect.middleware"]`` names this module, and this
module is callable: Django calls it with ``get_response`` and gets the middleware
(:class:`~django_postgresql_reconnect.guards.ReconnectMiddleware`, sync and async capable).
1.2.0's function, ``check_pgsql_connections_middleware``, is here too.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

from .guards import ReconnectMiddleware

__all__ = ["ReconnectMiddleware", "check_pgsql_connections_middleware"]

sync_capable = True
async_capable = True


def check_pgsql_connections_middleware(get_response: Callable[[Any], Any]) -> ReconnectMiddleware:
    """1.2.0's middleware factory: the engine's middleware, sync and async capable."""
    return ReconnectMiddleware(get_response)


check_pgsql_connections_middleware.sync_capable = True  # type: ignore[attr-defined]
check_pgsql_connections_middleware.async_capable = True  # type: ignore[attr-defined]


class _MiddlewareModule(types.ModuleType):
    """This module, callable as the middleware factory its dotted path names in MIDDLEWARE."""

    def __call__(self, get_response: Callable[[Any], Any]) -> ReconnectMiddleware:
        return ReconnectMiddleware(get_response)


sys.modules[__name__].__class__ = _MiddlewareModule
