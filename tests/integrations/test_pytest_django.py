"""pytest-django on a project whose ENGINE is this one, run by pytest in a process of its own.

What a user of pytest-django must see: the test database is created (and destroyed) through
the engine, tests pass, a transactional test survives a terminated backend, and in a test
wrapped in a transaction (pytest-django's default) a loss is ``TransactionLost``, after which
the test's rollback still ends cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integrations.conftest import ROOT, Project

pytest.importorskip("pytest_django", reason="needs the integrations dependency group")

TEST_DATABASE = "dpr_pytest_django"

SETTINGS = """
import json, os

from tests._driver import select_driver

select_driver()  # DPR_TEST_DRIVER, before Django loads a driver

DATABASES = {"default": json.loads(os.environ["DPR_DATABASE"])}
INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
SECRET_KEY = "pytest-django"
USE_TZ = True
"""

MODELS = """
from django.db import models


class Order(models.Model):
    number = models.IntegerField()

    class Meta:
        app_label = "shop"
"""

TESTS = """
import pytest
from django.db import connection, connections

from django_postgresql_reconnect import TransactionLost
from django_postgresql_reconnect.mixin import ReconnectMixin
from shop.models import Order
from tests.faults import backend_pid, wait_until_server_hung_up


def terminate_my_backend():
    admin = connection.Database.connect(**connection.get_connection_params())
    admin.cursor().execute("SELECT pg_terminate_backend(%s)", [backend_pid()])
    admin.close()
    wait_until_server_hung_up()


@pytest.mark.django_db
def test_the_test_database_is_used_through_the_engine():
    Order.objects.create(number=1)
    assert Order.objects.count() == 1
    assert isinstance(connections["default"], ReconnectMixin)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        assert cursor.fetchone() == ("dpr_pytest_django",)


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_survives_a_terminated_backend():
    Order.objects.create(number=2)
    terminate_my_backend()
    assert Order.objects.count() == 1


@pytest.mark.django_db
def test_a_loss_inside_the_tests_transaction_is_transaction_lost():
    Order.objects.create(number=3)
    terminate_my_backend()
    with pytest.raises(TransactionLost):
        Order.objects.count()
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def test_pytest_django_creates_the_test_database_and_runs_tests(project: Project, tmp_path: Path):
    write(tmp_path / "pytest.ini", "[pytest]\nDJANGO_SETTINGS_MODULE = settings\n")
    write(tmp_path / "settings.py", SETTINGS)
    write(tmp_path / "shop" / "__init__.py", "")
    write(tmp_path / "shop" / "models.py", MODELS)
    write(tmp_path / "test_shop.py", TESTS)
    entry = project.entry(via_proxy=False, TEST={"NAME": TEST_DATABASE})
    env = {
        **os.environ,
        "DPR_DATABASE": json.dumps(entry),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--create-db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    remaining = project.server.execute(
        f"SELECT count(*) FROM pg_database WHERE datname = '{TEST_DATABASE}'"
    )
    assert remaining == [("0",)]  # and destroyed afterwards
