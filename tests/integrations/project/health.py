"""Kubernetes probes, as docs/guides/kubernetes.md shows them.

Liveness asks nothing of the database: a database outage restarting every pod helps no one.
Readiness reads the engine's breakers and says "not ready" while one of the aliases the app
cannot work without is open; when it is, the probe itself gives the breaker its chance to
close, since a pod taken out of the Service gets no other traffic that would.
"""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse

from django_postgresql_reconnect import breaker_states, check_pgsql_connections


def alive(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"alive": True})


def ready(request: HttpRequest) -> JsonResponse:
    breakers = breaker_states()
    for alias in settings.READINESS_DATABASES:
        breaker = breakers.get(alias, {"state": "closed"})
        if breaker["state"] == "closed":
            continue  # nothing to ask the database: the last caller got through
        try:
            # While the breaker is open this is its probe (one connection attempt, at most
            # every BREAKER_PROBE_INTERVAL) or an immediate DatabaseUnavailable.
            check_pgsql_connections(using=alias)
            connections[alias].ensure_connection()
        except DatabaseError:
            return JsonResponse({"ready": False, "database": alias, **breaker}, status=503)
    return JsonResponse({"ready": True})
