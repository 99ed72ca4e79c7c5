"""The ``RECONNECT`` database setting: its options, defaults and validation.

Plain Python with no Django import: ``checks.py`` turns the problems found here into system
check messages, and the backend turns them into ``ImproperlyConfigured`` at connect time.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["TCP_DEFAULTS", "Problem", "ReconnectOptions", "find_problems", "parse_setting"]

# libpq parameters applied only where OPTIONS sets nothing. Keepalives find a dead idle
# connection within 30 + 3 x 10 = 60 s; tcp_user_timeout fails a statement whose packets vanish
# within 20 s (instead of the kernel's ~15 minutes of retransmissions); connect_timeout bounds
# each attempt so that the retry loop keeps to its deadline.
TCP_DEFAULTS: Mapping[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,
    "connect_timeout": 3,
}


@dataclass(frozen=True)
class ReconnectOptions:
    """Options of ``DATABASES[alias]['RECONNECT']`` when it is a dict; see the settings docs."""

    DEADLINE: float = 10.0
    """Seconds one caller may spend opening a replacement connection before giving up."""
    CONNECT_ATTEMPTS: int = 50
    """Connection attempts within the deadline, at most."""
    BACKOFF_INITIAL: float = 0.05
    """Upper bound of the first pause between attempts (seconds; full jitter below it)."""
    BACKOFF_MAX: float = 0.5
    """Cap of the pause between attempts (seconds)."""
    RETRY_READS: bool = True
    """Re-run an autocommit read whose connection was lost while it ran."""
    BREAKER_PROBE_INTERVAL: float = 0.5
    """Once a caller spent its whole deadline, other calls fail at once, and one probe at a
    time tries to connect, at most this often (seconds; 0 disables the breaker)."""
    IDLE_CHECK_AFTER: float = 2.0
    """A connection idle for longer gets one round-trip check before use (seconds)."""
    PING_TIMEOUT: float = 2.0
    """How long that round-trip check waits for the server's answer (seconds)."""
    TCP_DEFAULTS: bool = True
    """Apply keepalives, tcp_user_timeout and connect_timeout where OPTIONS sets none."""
    TRANSACTION_POOLING: bool = False
    """The connection goes through a transaction-pooling PgBouncer: session state cannot
    outlive a transaction there, so none is tracked, restored or reported. Not for RDS Proxy,
    which pins a session that holds state, so the state does outlive the transaction."""
    LOG_STATEMENTS: bool = True
    """Put the statement's text (cut to 200 characters, never its parameters) in log lines."""


_FIELDS = {f.name: f for f in fields(ReconnectOptions)}
_DEFAULTS = ReconnectOptions()
# Options renamed before 2.0, with what to write instead.
_RENAMED = {
    "BREAKER_COOLDOWN": "BREAKER_PROBE_INTERVAL (the breaker now probes every few tenths of "
    "a second instead of waiting out a cool-down)",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a ``RECONNECT`` setting, with the fix spelled out."""

    id: str
    message: str
    hint: str


def _type_name(expected: type) -> str:
    return {float: "a number of seconds", int: "a whole number", bool: "True or False"}[expected]


def find_problems(alias: str, value: object) -> list[Problem]:
    """List what is wrong with ``DATABASES[alias]['RECONNECT']``; empty when it is valid."""
    if isinstance(value, bool) or value is None:
        return []
    where = f"DATABASES[{alias!r}]['RECONNECT']"
    if not isinstance(value, Mapping):
        return [
            Problem(
                "django_postgresql_reconnect.E001",
                f"{where} must be True, False or a dict of options, not {type(value).__name__}.",
                "Write 'RECONNECT': True, or a dict such as {'DEADLINE': 10.0}.",
            )
        ]
    problems = []
    for key, option in value.items():
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key).upper(), _FIELDS, n=1)
            if key in _RENAMED:
                hint = f"Write {_RENAMED[key]}."
            elif close:
                hint = f"Did you mean {close[0]!r}?"
            else:
                hint = "Valid options: " + ", ".join(sorted(_FIELDS)) + "."
            problems.append(
                Problem(
                    "django_postgresql_reconnect.E002",
                    f"{where} has an unknown option {key!r}.",
                    hint,
                )
            )
            continue
        expected = type(getattr(_DEFAULTS, key))
        default = getattr(_DEFAULTS, key)
        ok_type = (
            isinstance(option, bool)
            if expected is bool
            else isinstance(option, (int, float) if expected is float else int)
            and not isinstance(option, bool)
        )
        if not ok_type:
            problems.append(
                Problem(
                    "django_postgresql_reconnect.E003",
                    f"{where}[{key!r}] must be {_type_name(expected)}, not {option!r}.",
                    f"Write {key!r}: {default!r} (the default) or another such value.",
                )
            )
            continue
        minimum = 1 if key == "CONNECT_ATTEMPTS" else 0
        strictly_positive = key in {"DEADLINE", "PING_TIMEOUT", "BACKOFF_MAX"}
        if expected is not bool and (option < minimum or (strictly_positive and option <= 0)):
            bound = "greater than 0" if strictly_positive else f"at least {minimum}"
            problems.append(
                Problem(
                    "django_postgresql_reconnect.E004",
                    f"{where}[{key!r}] must be {bound}, not {option!r}.",
                    f"Write {key!r}: {default!r} (the default) or another value {bound}.",
                )
            )
    initial = value.get("BACKOFF_INITIAL", _DEFAULTS.BACKOFF_INITIAL)
    maximum = value.get("BACKOFF_MAX", _DEFAULTS.BACKOFF_MAX)
    if (
        not problems
        and isinstance(initial, (int, float))
        and isinstance(maximum, (int, float))
        and initial > maximum
    ):
        problems.append(
            Problem(
                "django_postgresql_reconnect.E005",
                f"{where}['BACKOFF_INITIAL'] ({initial}) is greater than BACKOFF_MAX ({maximum}).",
                "Make BACKOFF_INITIAL at most BACKOFF_MAX, e.g. 0.05 and 1.0.",
            )
        )
    return problems


def parse_setting(alias: str, value: object) -> ReconnectOptions | None:
    """Return the options for ``value`` (None when reconnecting is off), or raise ValueError.

    An absent setting (None) means on: reconnecting is why one picks this engine.
    """
    problems = find_problems(alias, value)
    if problems:
        raise ValueError(" ".join(f"{p.message} {p.hint}" for p in problems))
    if value is False:
        return None
    if value is True or value is None:
        return _DEFAULTS
    assert isinstance(value, Mapping)
    options: dict[str, Any] = {
        key: float(v) if type(getattr(_DEFAULTS, key)) is float else v for key, v in value.items()
    }
    return ReconnectOptions(**options)
