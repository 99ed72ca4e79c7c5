"""Every name django-postgresql-reconnect 1.2.0 exposed still works, as 1.2.0 used it."""

from __future__ import annotations

import importlib

from asgiref.sync import iscoroutinefunction
from django.db import connections
from django.test import override_settings
from django.utils.module_loading import import_string

import django_postgresql_reconnect
from django_postgresql_reconnect import ReconnectMiddleware
from django_postgresql_reconnect.mixin import ReconnectMixin
from tests.app.models import Item
from tests.faults import backend_pid, lose_connection


def test_the_middleware_path_of_the_readme_loads_a_sync_and_async_middleware():
    factory = import_string("django_postgresql_reconnect.middleware")

    assert getattr(factory, "sync_capable", False) and getattr(factory, "async_capable", False)

    async def aview(request: object) -> str:
        return "async"

    assert isinstance(factory(lambda request: "sync"), ReconnectMiddleware)
    assert iscoroutinefunction(factory(aview))


def test_the_middleware_function_of_1_2_0_is_importable_by_its_module_path():
    from django_postgresql_reconnect.middleware import check_pgsql_connections_middleware

    assert (
        import_string("django_postgresql_reconnect.middleware.check_pgsql_connections_middleware")
        is check_pgsql_connections_middleware
    )
    middleware = check_pgsql_connections_middleware(lambda request: "ok")
    assert middleware(object()) == "ok"


def test_the_old_middleware_path_serves_a_request(server):
    from django.core.handlers.wsgi import WSGIHandler

    from tests.test_web import wsgi_request

    with override_settings(
        MIDDLEWARE=["django_postgresql_reconnect.middleware.check_pgsql_connections_middleware"],
        ROOT_URLCONF="tests.urls",
    ):
        app = WSGIHandler()
    assert wsgi_request(app, "/items/count")[0] == 200


def test_the_decorator_module_decorates_as_in_1_2_0(server):
    @django_postgresql_reconnect.decorator
    def count() -> int:
        return Item.objects.count()

    from django_postgresql_reconnect.decorator import check_pgsql_connections_decorator

    @check_pgsql_connections_decorator
    def count_too() -> int:
        return Item.objects.count()

    count()
    lose_connection(server)
    assert count() == 0
    assert count_too() == 0


def test_the_helpers_module_still_has_check_pgsql_connections(server):
    helpers = importlib.import_module("django_postgresql_reconnect.helpers")

    Item.objects.count()
    before = backend_pid()
    lose_connection(server)
    helpers.check_pgsql_connections()

    assert helpers.check_pgsql_connections is django_postgresql_reconnect.check_pgsql_connections
    assert backend_pid() != before


def test_the_wrapper_methods_of_1_2_0(server):
    wrapper = connections["default"]
    assert isinstance(wrapper, ReconnectMixin)
    Item.objects.count()
    before = backend_pid()

    assert wrapper.reconnect_enabled()
    assert wrapper.should_reconnect()
    wrapper.reconnect()

    assert backend_pid() != before
    disabled = connections["disabled"]
    assert isinstance(disabled, ReconnectMixin)
    assert not disabled.reconnect_enabled()
