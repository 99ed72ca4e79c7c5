"""What the servers are asked: which backend served a request, and rows read and written."""

from __future__ import annotations

import os

from django.db import connection
from django.http import HttpRequest, JsonResponse

from django_postgresql_reconnect import aretry_atomic, retry_atomic
from tests.app.models import Item


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def backend(request: HttpRequest) -> JsonResponse:
    """The PostgreSQL backend and the OS process that served this request."""
    return JsonResponse({"backend_pid": _backend_pid(), "pid": os.getpid()})


def count(request: HttpRequest) -> JsonResponse:
    using = request.GET.get("using", "default")
    return JsonResponse({"count": Item.objects.using(using).count()})


def create(request: HttpRequest) -> JsonResponse:
    name = request.GET["name"]
    pk = retry_atomic(lambda: Item.objects.create(name=name).pk)
    return JsonResponse({"id": pk}, status=201)


async def abackend(request: HttpRequest) -> JsonResponse:
    count = await Item.objects.acount()  # the async ORM, through the engine
    return JsonResponse({"count": count, "pid": os.getpid()})


async def acreate(request: HttpRequest) -> JsonResponse:
    name = request.GET["name"]
    pk = await aretry_atomic(lambda: Item.objects.create(name=name).pk)
    return JsonResponse({"id": pk}, status=201)
