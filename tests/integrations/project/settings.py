"""Settings of the project that gunicorn, uvicorn, daphne and the Celery worker run."""

from __future__ import annotations

import json
import os

DATABASES = json.loads(os.environ["DPR_SITE_DATABASES"])
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_postgresql_reconnect",
    "tests.app.apps.TestAppConfig",
]
MIDDLEWARE = ["django_postgresql_reconnect.middleware"]
ROOT_URLCONF = "tests.integrations.project.urls"
READINESS_DATABASES = ["default"]
SECRET_KEY = "integrations"
ALLOWED_HOSTS = ["*"]
USE_TZ = True
DEBUG = False
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_postgresql_reconnect": {"handlers": ["stderr"], "level": "INFO"}},
}
