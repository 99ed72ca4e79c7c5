"""Prometheus metrics of the engine's decisions, when ``prometheus_client`` is installed.

Nothing to configure: the first time the engine is loaded with ``prometheus_client`` present,
two metrics are registered in its default registry, with the same names whether or not
django-prometheus is used (whose ``/metrics`` view serves that registry too):

- ``django_postgresql_reconnect_decisions_total{alias, decision}``: a counter of every decision
  (``events.DECISIONS``, plus ``connection lost``).
- ``django_postgresql_reconnect_recovery_seconds{alias, decision}``: a histogram of the seconds
  from a loss to its outcome (a re-run, a reconnect, an unavailable database).

``breaker_states()`` gives each alias's breaker for a health or readiness endpoint.
"""

from __future__ import annotations

import threading
from typing import Any

from . import signals

__all__ = ["breaker_states", "install"]

DECISIONS_METRIC = "django_postgresql_reconnect_decisions_total"
RECOVERY_METRIC = "django_postgresql_reconnect_recovery_seconds"
# From a fast re-run to a failover: 10 ms to a minute.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_installed: dict[int, Any] = {}
_lock = threading.Lock()


def install(registry: Any = None) -> bool:
    """Count the engine's decisions in Prometheus metrics; False without prometheus_client.

    Called when the engine loads; call it yourself only to use another registry.
    """
    try:
        from prometheus_client import REGISTRY, Counter, Histogram
    except ImportError:
        return False
    registry = registry if registry is not None else REGISTRY
    with _lock:
        if id(registry) in _installed:
            return True
        decisions = Counter(
            DECISIONS_METRIC.removesuffix("_total"),
            "Decisions of django-postgresql-reconnect about lost connections.",
            ["alias", "decision"],
            registry=registry,
        )
        recovery = Histogram(
            RECOVERY_METRIC,
            "Seconds from a lost connection to the engine's decision about it.",
            ["alias", "decision"],
            buckets=BUCKETS,
            registry=registry,
        )

        def count(
            sender: Any, alias: str, decision: str, seconds: Any = None, **kwargs: Any
        ) -> None:
            decisions.labels(alias=alias, decision=decision).inc()
            if seconds is not None:
                recovery.labels(alias=alias, decision=decision).observe(seconds)

        _installed[id(registry)] = count  # the signal keeps a weak reference: keep it alive
        signals.decided.connect(count, dispatch_uid=f"{__name__}.{id(registry)}")
    return True


def breaker_states() -> dict[str, dict[str, Any]]:
    """Each alias's breaker in this process: ``{"default": {"state": "closed", "down_for":
    0.0}}``; ``state`` is ``closed``, ``open`` (calls fail at once) or ``half-open`` (a probe
    is trying). For a readiness probe: not ready while an alias the app needs is open."""
    from .state import all_alias_health

    return {
        health.alias: {
            "state": health.breaker.state,
            "down_for": round(health.breaker.down_for, 3),
        }
        for health in all_alias_health()
    }
