"""1.2.0's ``django_postgresql_reconnect.decorator``, still working both ways it was used.

``@django_postgresql_reconnect.decorator`` names this module, and this module is callable: it
decorates as :class:`~django_postgresql_reconnect.guards.reconnect` does (bare, with
``using=``, on sync or async functions). 1.2.0's ``check_pgsql_connections_decorator`` is here
too.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .guards import reconnect

__all__ = ["check_pgsql_connections_decorator", "reconnect"]


def check_pgsql_connections_decorator(func: Any) -> Any:
    """1.2.0's decorator: check this thread's connections before each call of ``func``."""
    return reconnect(func)


class _DecoratorModule(types.ModuleType):
    """This module, callable as the decorator (``@django_postgresql_reconnect.decorator``)."""

    def __call__(self, func: Any = None, *, using: Any = None) -> Any:
        return reconnect(func, using=using)


sys.modules[__name__].__class__ = _DecoratorModule
