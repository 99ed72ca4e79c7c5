"""``ENGINE: 'django_postgresql_reconnect.postgis'``: GeoDjango's PostGIS backend, reconnecting."""

from django.contrib.gis.db.backends.postgis.base import DatabaseWrapper as PostGISDatabaseWrapper

from ..mixin import ReconnectMixin

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(ReconnectMixin, PostGISDatabaseWrapper):
    """GeoDjango's PostGIS ``DatabaseWrapper`` with the reconnecting engine in front."""
