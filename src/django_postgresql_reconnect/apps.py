"""Optional ``INSTALLED_APPS`` entry: lets a plain ``manage.py check`` validate ``RECONNECT``."""

from __future__ import annotations

from django.apps import AppConfig


class ReconnectConfig(AppConfig):
    name = "django_postgresql_reconnect"
    verbose_name = "PostgreSQL reconnect"

    def ready(self) -> None:
        from django.core import checks

        from .checks import check_reconnect_settings

        checks.register(check_reconnect_settings)
