"""System checks: a wrong ``RECONNECT`` setting fails ``manage.py check`` with the fix.

Django imports a database backend only when a connection is first used, so a check
registered by the backend would miss a plain ``manage.py check``. Two ways in, each message
reported once: with ``'django_postgresql_reconnect'`` in ``INSTALLED_APPS`` the app registers
``check_reconnect_settings`` at start-up (``apps.py``); without it, the backend's validation
reports its own alias under ``manage.py check --database`` (and ``migrate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.validation import BaseDatabaseValidation
from django.db.utils import load_backend

from .conf import find_problems

__all__ = ["ReconnectValidation", "check_reconnect_settings"]

ENGINES = ("django_postgresql_reconnect.backend", "django_postgresql_reconnect.postgis")


def _reconnects(engine: str) -> bool | None:
    """Does this ENGINE's DatabaseWrapper carry the engine? None when it cannot be loaded."""
    if engine in ENGINES:
        return True
    from .mixin import ReconnectMixin

    try:
        wrapper = load_backend(engine).DatabaseWrapper
    except (ImproperlyConfigured, ImportError, AttributeError):
        return None  # Django reports a broken ENGINE itself
    return isinstance(wrapper, type) and issubclass(wrapper, ReconnectMixin)


def setting_errors(alias: str, settings_dict: dict[str, Any]) -> list[CheckMessage]:
    """The E0xx errors of one alias whose ENGINE reconnects."""
    return [
        Error(problem.message, hint=problem.hint, id=problem.id)
        for problem in find_problems(alias, settings_dict.get("RECONNECT"))
    ]


def check_reconnect_settings(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Validate ``RECONNECT`` for every alias whose ENGINE uses the reconnecting engine."""
    messages: list[CheckMessage] = []
    for alias, settings_dict in settings.DATABASES.items():
        if "RECONNECT" not in settings_dict:
            continue  # absent means on with the defaults: nothing to check
        engine = str(settings_dict.get("ENGINE", ""))
        reconnects = _reconnects(engine)
        if reconnects:
            messages.extend(setting_errors(alias, settings_dict))
        elif reconnects is False and settings_dict.get("RECONNECT"):
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] sets RECONNECT but its ENGINE is {engine!r}, "
                    "so nothing will reconnect.",
                    hint="Set 'ENGINE': 'django_postgresql_reconnect.backend' (or "
                    "'django_postgresql_reconnect.postgis' for GeoDjango).",
                    id="django_postgresql_reconnect.W001",
                )
            )
    return messages


class ReconnectValidation(BaseDatabaseValidation):
    """The backend's own checks (``check --database``): its ``RECONNECT`` setting."""

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        messages: list[CheckMessage] = list(super().check(**kwargs))
        if not apps.is_installed("django_postgresql_reconnect"):  # else the app's check does
            messages.extend(setting_errors(self.connection.alias, self.connection.settings_dict))
        return messages
