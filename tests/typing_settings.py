"""Settings for type checking only: mypy's django-stubs plugin sets Django up with these to
learn the models and settings (pyproject.toml, [tool.django-stubs]); the tests configure their
own (conftest.py)."""

SECRET_KEY = "typing"
INSTALLED_APPS = ["django.contrib.contenttypes", "tests.app.apps.TestAppConfig"]
DATABASES = {"default": {"ENGINE": "django_postgresql_reconnect.backend", "NAME": "typing"}}
USE_TZ = True
ROOT_URLCONF = "tests.urls"
# Settings that tests/integrations reads or overrides: django-tenants' and the readiness view's.
READINESS_DATABASES = ["default"]
TENANT_LIMIT_SET_CALLS = False
