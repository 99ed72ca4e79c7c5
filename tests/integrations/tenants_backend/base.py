"""django-tenants' PostgreSQL backend with the engine in front, as docs/guides/compositions.md
builds it: ENGINE "tests.integrations.tenants_backend"."""

from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantDatabaseWrapper

from django_postgresql_reconnect.mixin import ReconnectMixin


class DatabaseWrapper(ReconnectMixin, TenantDatabaseWrapper):
    pass
