"""Views the web scenarios request: each reads or writes ``Item`` on the alias it is given.

``?using=`` picks the alias (``default`` when absent). Writes go through ``retry_atomic``,
as an application that must not lose a write to an outage would write them; reads are plain
ORM calls, which the engine runs again on its own.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse

from django_postgresql_reconnect import retry_atomic
from tests.app.models import Item


def _using(request: HttpRequest) -> str:
    return request.GET.get("using", "default")


def _create(name: str, using: str) -> int:
    return retry_atomic(lambda: Item.objects.using(using).create(name=name).pk, using=using)


def count(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": Item.objects.using(_using(request)).count()})


def create(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"id": _create(request.GET["name"], _using(request))}, status=201)


async def acount(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": await Item.objects.using(_using(request)).acount()})


async def aget(request: HttpRequest) -> JsonResponse:
    item = await Item.objects.using(_using(request)).aget(name=request.GET["name"])
    return JsonResponse({"id": item.pk, "name": item.name})


async def anames(request: HttpRequest) -> JsonResponse:
    names = [item.name async for item in Item.objects.using(_using(request)).order_by("id")]
    return JsonResponse({"names": names})


async def acreate(request: HttpRequest) -> JsonResponse:
    pk = await sync_to_async(_create)(request.GET["name"], _using(request))
    return JsonResponse({"id": pk}, status=201)
