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

from . import drivers
from .conf import TCP_DEFAULTS, ReconnectOptions, find_problems, parse_setting

__all__ = ["ReconnectValidation", "check_deploy", "check_reconnect_settings"]

ENGINES = ("django_postgresql_reconnect.backend", "django_postgresql_reconnect.postgis")


def _reconnects(engine: str) -> bool | None:
    """Does this ENGINE's DatabaseWrapper carry the engine? None when it cannot be loaded."""
    if engine in ENGINES:
        return True
    try:
        wrapper = load_backend(engine).DatabaseWrapper
    except (ImproperlyConfigured, ImportError, AttributeError):
        return None  # Django reports a broken ENGINE itself
    # ReconnectMixin says so with this attribute (no import of the mixin: it imports us).
    return bool(getattr(wrapper, "carries_reconnect_engine", False))


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
        engine = str(settings_dict.get("ENGINE", ""))
        if "RECONNECT" not in settings_dict:
            if _reconnects(engine):
                messages.extend(pooling_warnings(alias, settings_dict))
            continue  # absent means on with the defaults: nothing more to check
        reconnects = _reconnects(engine)
        if reconnects:
            messages.extend(setting_errors(alias, settings_dict))
            messages.extend(pooling_warnings(alias, settings_dict))
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


def _options(settings_dict: dict[str, Any]) -> ReconnectOptions | None:
    try:
        return parse_setting("", settings_dict.get("RECONNECT"))
    except ValueError:
        return None  # reported as an error already


def pooling_warnings(alias: str, settings_dict: dict[str, Any]) -> list[CheckMessage]:
    """W006, W007: settings that break under a transaction-pooling PgBouncer."""
    options = _options(settings_dict)
    if options is None or not options.TRANSACTION_POOLING:
        return []
    where = f"DATABASES[{alias!r}]"
    messages: list[CheckMessage] = []
    if not settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        messages.append(
            Warning(
                f"{where} goes through transaction pooling (TRANSACTION_POOLING) but keeps "
                "server-side cursors: .iterator() outside a transaction then fails, since its "
                "cursor lives on a server connection the pooler hands to another client.",
                hint="Set 'DISABLE_SERVER_SIDE_CURSORS': True.",
                id="django_postgresql_reconnect.W006",
            )
        )
    prepare = (settings_dict.get("OPTIONS") or {}).get("prepare_threshold")
    if prepare is not None and drivers.IS_PSYCOPG3:
        messages.append(
            Warning(
                f"{where} goes through transaction pooling (TRANSACTION_POOLING) with "
                f"psycopg 3 prepared statements (prepare_threshold={prepare!r}): a statement "
                "prepared on one server connection is missing on the next.",
                hint="Remove 'prepare_threshold' from OPTIONS (Django's default, None, turns "
                "them off), or use PgBouncer 1.21+ with max_prepared_statements set.",
                id="django_postgresql_reconnect.W007",
            )
        )
    return messages


# gunicorn's default worker timeout: a request waiting longer is killed with its worker.
WEB_WORKER_TIMEOUT = 30.0
MIDDLEWARE_NAMES = (
    "django_postgresql_reconnect.middleware",
    "django_postgresql_reconnect.ReconnectMiddleware",
    "django_postgresql_reconnect.guards.ReconnectMiddleware",
)


def check_deploy(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``manage.py check --deploy``: settings that defeat reconnection in production."""
    messages: list[CheckMessage] = []
    middleware = any(name in MIDDLEWARE_NAMES for name in getattr(settings, "MIDDLEWARE", []))
    for alias, settings_dict in settings.DATABASES.items():
        if not _reconnects(str(settings_dict.get("ENGINE", ""))):
            continue
        options = _options(settings_dict)
        if options is None:
            continue
        messages.extend(_deploy_warnings(alias, settings_dict, options, middleware))
    return messages


def _deploy_warnings(
    alias: str, settings_dict: dict[str, Any], options: ReconnectOptions, middleware: bool
) -> list[CheckMessage]:
    where = f"DATABASES[{alias!r}]"
    db_options = settings_dict.get("OPTIONS") or {}
    found: list[CheckMessage] = []
    keepalives_off = str(db_options.get("keepalives", "1")) == "0" or (
        not options.TCP_DEFAULTS and "keepalives" not in db_options
    )
    if keepalives_off:
        found.append(
            Warning(
                f"{where} has TCP keepalives off: a connection a firewall or load balancer "
                "dropped while idle is found only when a statement times out on it.",
                hint="Remove 'keepalives': 0 from OPTIONS (the engine then applies 30/10/3 s), "
                "or write 'keepalives': 1 with 'keepalives_idle': 30.",
                id="django_postgresql_reconnect.W002",
            )
        )
    timeout = db_options.get("connect_timeout", TCP_DEFAULTS["connect_timeout"])
    if (not options.TCP_DEFAULTS and "connect_timeout" not in db_options) or str(timeout) == "0":
        found.append(
            Warning(
                f"{where} has no connect_timeout: one connection attempt to a host that drops "
                "packets waits for the kernel (minutes), past any DEADLINE.",
                hint="Write 'connect_timeout': 3 in OPTIONS.",
                id="django_postgresql_reconnect.W003",
            )
        )
    if middleware and settings_dict.get("CONN_MAX_AGE", 0) == 0:
        found.append(
            Warning(
                f"{where} has CONN_MAX_AGE = 0 and the reconnect middleware is installed: "
                "every request opens a new connection anyway, so the middleware only adds work.",
                hint="Set CONN_MAX_AGE (for example None, with the engine watching the "
                "connections), or remove 'django_postgresql_reconnect.middleware'.",
                id="django_postgresql_reconnect.W004",
            )
        )
    if options.DEADLINE > WEB_WORKER_TIMEOUT:
        found.append(
            Warning(
                f"{where}['RECONNECT']['DEADLINE'] is {options.DEADLINE:g} s: a request can "
                f"wait that long for a database that is down, longer than a web worker usually "
                f"lives ({WEB_WORKER_TIMEOUT:g} s is gunicorn's default timeout).",
                hint="Write a DEADLINE below your web workers' timeout, such as 10.0; a "
                "Celery or management-command alias may keep a longer one.",
                id="django_postgresql_reconnect.W005",
            )
        )
    return found


class ReconnectValidation(BaseDatabaseValidation):
    """The backend's own checks (``check --database``): its ``RECONNECT`` setting."""

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        messages: list[CheckMessage] = list(super().check(**kwargs))
        if not apps.is_installed("django_postgresql_reconnect"):  # else the app's check does
            alias, settings_dict = self.connection.alias, self.connection.settings_dict
            messages.extend(setting_errors(alias, settings_dict))
            messages.extend(pooling_warnings(alias, settings_dict))
        return messages
