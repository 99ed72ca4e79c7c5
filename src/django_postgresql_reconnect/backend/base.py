"""``ENGINE: 'django_postgresql_reconnect.backend'``: Django's PostgreSQL backend, reconnecting."""

from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper

from ..mixin import ReconnectMixin

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(ReconnectMixin, PostgreSQLDatabaseWrapper):
    """Django's PostgreSQL ``DatabaseWrapper`` with the reconnecting engine in front."""
