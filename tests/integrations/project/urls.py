from django.urls import path

from tests.integrations.project import health, views

urlpatterns = [
    path("backend", views.backend),
    path("items/count", views.count),
    path("items/create", views.create),
    path("async/backend", views.abackend),
    path("async/items/create", views.acreate),
    path("healthz", health.alive),
    path("readyz", health.ready),
]
