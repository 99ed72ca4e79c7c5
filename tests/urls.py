from django.urls import path

from tests import views

urlpatterns = [
    path("items/count", views.count),
    path("items/create", views.create),
    path("async/items/count", views.acount),
    path("async/items/get", views.aget),
    path("async/items/names", views.anames),
    path("async/items/create", views.acreate),
]
