"""Settings for Django's own ``tests/runtests.py``, as its ``test_sqlite.py`` but on PostgreSQL.

``djsuite/run.py`` chooses the ENGINE (this package's or Django's own) and the server through
the environment, so that the same file serves both sides of the comparison.
"""

import os

import django

ENGINE = os.environ["DJSUITE_ENGINE"]


def _alias(name: str) -> dict[str, object]:
    return {
        "ENGINE": ENGINE,
        "NAME": name,
        "USER": "postgres",
        "HOST": os.environ["DJSUITE_HOST"],
        "PORT": os.environ["DJSUITE_PORT"],
    }


DATABASES = {"default": _alias("django"), "other": _alias("django_other")}

SECRET_KEY = "django_tests_secret_key"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Each version's test_sqlite.py: 6.0 made BigAutoField the default and stopped setting it.
if django.VERSION < (6, 0):
    DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = False

# Writes each test's outcome where run.py reads it (djsuite/recorder.py).
TEST_RUNNER = "recorder.RecordingRunner"
