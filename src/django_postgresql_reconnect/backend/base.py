"""``ENGINE: 'django_postgresql_reconnect.backend'``: Django's PostgreSQL backend, reconnecting."""

from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper

from .. import checks  # noqa: F401  (registers the system checks with the engine)
from ..mixin import ReconnectMixin

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(ReconnectMixin, PostgreSQLDatabaseWrapper):
    """Django's PostgreSQL ``DatabaseWrapper`` with the reconnecting engine in front."""
