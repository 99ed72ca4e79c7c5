"""1.2.0's ``django_postgresql_reconnect.helpers``: only ``check_pgsql_connections`` lived here.

Import it from the package itself: ``from django_postgresql_reconnect import
check_pgsql_connections``.
"""

from __future__ import annotations

from .guards import check_pgsql_connections

__all__ = ["check_pgsql_connections"]
