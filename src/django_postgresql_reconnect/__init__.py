"""A Django PostgreSQL backend that recovers from lost connections, safely.

The names below are the public API; ``middleware``, ``decorator`` and
``check_pgsql_connections`` are the ones django-postgresql-reconnect 1.2.0 documented. They
load on first use, so that importing the package (the pytest plugin in ``testing`` does) pulls
in neither Django's database layer nor a driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "2.0.0.dev0"

_PUBLIC = {
    "CommitOutcomeUnknown": "exceptions",
    "DatabaseUnavailable": "exceptions",
    "ReconnectError": "exceptions",
    "SessionStateLost": "exceptions",
    "StatementOutcomeUnknown": "exceptions",
    "StatementInterrupted": "exceptions",
    "TransactionLost": "exceptions",
    "ReconnectMiddleware": "guards",
    "check_pgsql_connections": "guards",
    "reconnect": "guards",
    "aretry_atomic": "transactions",
    "breaker_states": "metrics",
    "no_retry": "transactions",
    "retry_atomic": "transactions",
    "retrying_atomic": "transactions",
}
# The 1.2.0 names: MIDDLEWARE = ["django_postgresql_reconnect.middleware"] and
# @django_postgresql_reconnect.decorator name modules that are callable as the middleware
# factory and the decorator (see middleware.py, decorator.py), so that 1.2.0's imports from
# them keep working too.
_MODULES = ("middleware", "decorator", "helpers")

__all__ = [
    "CommitOutcomeUnknown",
    "DatabaseUnavailable",
    "ReconnectError",
    "ReconnectMiddleware",
    "SessionStateLost",
    "StatementInterrupted",
    "StatementOutcomeUnknown",
    "TransactionLost",
    "aretry_atomic",
    "breaker_states",
    "check_pgsql_connections",
    "decorator",
    "middleware",
    "no_retry",
    "reconnect",
    "retry_atomic",
    "retrying_atomic",
]

if TYPE_CHECKING:
    # The modules as the callables they are at run time (a plain import would type them as
    # modules, which mypy refuses to call).
    from .decorator import _DecoratorModule
    from .middleware import _MiddlewareModule

    decorator: _DecoratorModule
    middleware: _MiddlewareModule
    from .exceptions import (
        CommitOutcomeUnknown,
        DatabaseUnavailable,
        ReconnectError,
        SessionStateLost,
        StatementInterrupted,
        StatementOutcomeUnknown,
        TransactionLost,
    )
    from .guards import ReconnectMiddleware, check_pgsql_connections, reconnect
    from .metrics import breaker_states
    from .transactions import aretry_atomic, no_retry, retry_atomic, retrying_atomic


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
