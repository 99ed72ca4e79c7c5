"""Wrong RECONNECT settings fail `manage.py check` with a message that says what to write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import ConnectionHandler
from django.test import override_settings

from django_postgresql_reconnect.checks import check_reconnect_settings
from django_postgresql_reconnect.conf import ReconnectOptions, find_problems, parse_setting

ENGINE = "django_postgresql_reconnect.backend"


@pytest.mark.parametrize("value", [True, None, {}, {"DEADLINE": 3, "RETRY_READS": False}])
def test_valid_settings_have_no_problems(value):
    assert find_problems("default", value) == []


def test_absent_or_true_means_enabled_with_defaults_and_false_means_off():
    assert parse_setting("default", None) == ReconnectOptions()
    assert parse_setting("default", True) == ReconnectOptions()
    assert parse_setting("default", False) is None


@pytest.mark.parametrize(
    ("value", "check_id", "fix"),
    [
        ("yes", "django_postgresql_reconnect.E001", "'RECONNECT': True"),
        ({"DEADLINES": 5}, "django_postgresql_reconnect.E002", "Did you mean 'DEADLINE'?"),
        ({"DEADLINE": "10"}, "django_postgresql_reconnect.E003", "'DEADLINE': 10.0"),
        ({"RETRY_READS": 1}, "django_postgresql_reconnect.E003", "'RETRY_READS': True"),
        ({"DEADLINE": 0}, "django_postgresql_reconnect.E004", "greater than 0"),
        ({"CONNECT_ATTEMPTS": 0}, "django_postgresql_reconnect.E004", "at least 1"),
        (
            {"BACKOFF_INITIAL": 2.0, "BACKOFF_MAX": 1.0},
            "django_postgresql_reconnect.E005",
            "at most BACKOFF_MAX",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_manage_py_check_reports_each_wrong_setting_with_its_fix(value, check_id, fix):
    databases = {"default": {"ENGINE": ENGINE, "NAME": "x", "RECONNECT": value}}
    with override_settings(DATABASES=databases):
        messages = check_reconnect_settings()

    assert [m.id for m in messages] == [check_id]
    assert fix in (messages[0].hint or "") or fix in messages[0].msg


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_reconnect_on_a_stock_engine_is_a_warning_that_names_the_engine_to_use():
    databases = {"default": {"ENGINE": "django.db.backends.postgresql", "RECONNECT": True}}
    with override_settings(DATABASES=databases):
        messages = check_reconnect_settings()

    assert [m.id for m in messages] == ["django_postgresql_reconnect.W001"]
    assert ENGINE in (messages[0].hint or "")


def test_a_wrong_setting_that_skipped_the_checks_fails_at_connect():
    handler = ConnectionHandler({"default": {"ENGINE": ENGINE, "NAME": "x", "RECONNECT": "on"}})
    with pytest.raises(ImproperlyConfigured, match="RECONNECT"):
        handler["default"].connect()


def manage_py_check(
    tmp_path: Path, databases: dict[str, Any], *args: str, apps: tuple[str, ...] = ()
) -> tuple[int, str]:
    """Run ``django-admin check`` in a fresh process on a settings module made for the test."""
    (tmp_path / "check_settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "test"
            INSTALLED_APPS = {list(apps)!r}
            DATABASES = {databases!r}
            """
        )
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "check_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "check", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


BAD = {"default": {"ENGINE": ENGINE, "NAME": "x", "RECONNECT": {"DEADLINE": "10"}}}


def test_manage_py_check_fails_on_a_wrong_setting_when_the_app_is_installed(tmp_path):
    status, output = manage_py_check(tmp_path, BAD, apps=("django_postgresql_reconnect",))

    assert status == 1, output
    assert "django_postgresql_reconnect.E003" in output
    assert "Write 'DEADLINE': 10.0" in output


def test_manage_py_check_database_fails_on_a_wrong_setting_without_the_app(tmp_path):
    """migrate and check --database run the backend's own validation, app or no app."""
    status, output = manage_py_check(tmp_path, BAD, "--database", "default")

    assert status == 1, output
    assert output.count("django_postgresql_reconnect.E003") == 1


def test_manage_py_check_reports_once_with_the_app_and_database(tmp_path):
    status, output = manage_py_check(
        tmp_path, BAD, "--database", "default", apps=("django_postgresql_reconnect",)
    )

    assert status == 1, output
    assert output.count("django_postgresql_reconnect.E003") == 1


def test_manage_py_check_passes_good_settings(tmp_path):
    good = {"default": {"ENGINE": ENGINE, "NAME": "x", "RECONNECT": {"DEADLINE": 5}}}
    status, output = manage_py_check(
        tmp_path, good, "--database", "default", apps=("django_postgresql_reconnect",)
    )

    assert status == 0, output


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_a_custom_backend_built_on_the_mixin_is_checked_not_warned_about():
    databases = {"default": {"ENGINE": "tests.custom_backend", "RECONNECT": {"DEADLINE": "10"}}}
    with override_settings(DATABASES=databases):
        messages = check_reconnect_settings()

    assert [m.id for m in messages] == ["django_postgresql_reconnect.E003"]


@pytest.mark.parametrize(
    ("entry", "extra", "check_id"),
    [
        ({"OPTIONS": {"keepalives": 0}}, {}, "django_postgresql_reconnect.W002"),
        ({"RECONNECT": {"TCP_DEFAULTS": False}}, {}, "django_postgresql_reconnect.W003"),
        ({"OPTIONS": {"connect_timeout": 0}}, {}, "django_postgresql_reconnect.W003"),
        (
            {"CONN_MAX_AGE": 0},
            {"MIDDLEWARE": ["django_postgresql_reconnect.middleware"]},
            "django_postgresql_reconnect.W004",
        ),
        ({"RECONNECT": {"DEADLINE": 120.0}}, {}, "django_postgresql_reconnect.W005"),
    ],
)
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_check_deploy_warns_about_settings_that_defeat_reconnection(entry, extra, check_id):
    from django_postgresql_reconnect.checks import check_deploy

    databases = {"default": {"ENGINE": ENGINE, "NAME": "x", "CONN_MAX_AGE": None, **entry}}
    with override_settings(DATABASES=databases, **extra):
        messages = check_deploy()

    assert check_id in [m.id for m in messages]
    assert all(m.hint for m in messages)


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_check_deploy_is_quiet_for_the_recommended_settings():
    from django_postgresql_reconnect.checks import check_deploy

    databases = {"default": {"ENGINE": ENGINE, "NAME": "x", "CONN_MAX_AGE": None}}
    with override_settings(
        DATABASES=databases, MIDDLEWARE=["django_postgresql_reconnect.middleware"]
    ):
        assert check_deploy() == []


def test_manage_py_check_deploy_runs_the_warnings_with_the_app(tmp_path):
    slow = {"default": {"ENGINE": ENGINE, "NAME": "x", "RECONNECT": {"DEADLINE": 120.0}}}
    _status, output = manage_py_check(
        tmp_path, slow, "--deploy", apps=("django_postgresql_reconnect",)
    )
    assert "django_postgresql_reconnect.W005" in output, output


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_transaction_pooling_warns_about_server_side_cursors():
    pooled: dict[str, Any] = {
        "ENGINE": ENGINE,
        "NAME": "x",
        "RECONNECT": {"TRANSACTION_POOLING": True},
    }
    with override_settings(DATABASES={"default": pooled}):
        ids = [m.id for m in check_reconnect_settings()]
    assert "django_postgresql_reconnect.W006" in ids
    pooled["DISABLE_SERVER_SIDE_CURSORS"] = True
    with override_settings(DATABASES={"default": pooled}):
        assert check_reconnect_settings() == []


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_transaction_pooling_warns_about_psycopg3_prepared_statements():
    from django_postgresql_reconnect import drivers

    pooled = {
        "ENGINE": ENGINE,
        "NAME": "x",
        "DISABLE_SERVER_SIDE_CURSORS": True,
        "OPTIONS": {"prepare_threshold": 5},
        "RECONNECT": {"TRANSACTION_POOLING": True},
    }
    with override_settings(DATABASES={"default": pooled}):
        ids = [m.id for m in check_reconnect_settings()]
    assert ids == (["django_postgresql_reconnect.W007"] if drivers.IS_PSYCOPG3 else [])
