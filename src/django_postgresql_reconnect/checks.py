"""System checks: a wrong ``RECONNECT`` setting fails ``manage.py check`` with the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from .conf import find_problems

__all__ = ["check_reconnect_settings"]

ENGINES = ("django_postgresql_reconnect.backend", "django_postgresql_reconnect.postgis")


@register()
def check_reconnect_settings(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Validate ``RECONNECT`` for every alias whose ENGINE is this package's."""
    messages: list[CheckMessage] = []
    for alias, settings_dict in settings.DATABASES.items():
        engine = settings_dict.get("ENGINE", "")
        if engine not in ENGINES:
            if settings_dict.get("RECONNECT"):
                messages.append(
                    Warning(
                        f"DATABASES[{alias!r}] sets RECONNECT but its ENGINE is {engine!r}, "
                        "so nothing will reconnect.",
                        hint="Set 'ENGINE': 'django_postgresql_reconnect.backend' (or "
                        "'django_postgresql_reconnect.postgis' for GeoDjango).",
                        id="django_postgresql_reconnect.W001",
                    )
                )
            continue
        for problem in find_problems(alias, settings_dict.get("RECONNECT")):
            messages.append(Error(problem.message, hint=problem.hint, id=problem.id))
    return messages
