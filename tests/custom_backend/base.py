"""A user's own PostgreSQL-derived backend that composes the engine in, as the docs show."""

from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper

from django_postgresql_reconnect.mixin import ReconnectMixin


class DatabaseWrapper(ReconnectMixin, PostgreSQLDatabaseWrapper):
    pass
