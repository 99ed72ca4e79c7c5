"""Optional ``INSTALLED_APPS`` entry: ``manage.py check`` validates ``RECONNECT``, and
``check --deploy`` warns about settings that defeat reconnection."""

from __future__ import annotations

from django.apps import AppConfig


class ReconnectConfig(AppConfig):
    name = "django_postgresql_reconnect"
    verbose_name = "PostgreSQL reconnect"

    def ready(self) -> None:
        from django.core import checks

        from .checks import check_deploy, check_reconnect_settings

        checks.register(check_reconnect_settings)
        checks.register(check_deploy, deploy=True)
