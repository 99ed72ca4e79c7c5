"""django-prometheus's PostgreSQL backend with the engine in front, as docs/guides/compositions.md
builds it: ENGINE "tests.integrations.prometheus_backend"."""

from django_prometheus.db.backends.postgresql.base import (
    DatabaseWrapper as PrometheusDatabaseWrapper,
)

from django_postgresql_reconnect.mixin import ReconnectMixin


class DatabaseWrapper(ReconnectMixin, PrometheusDatabaseWrapper):
    pass
