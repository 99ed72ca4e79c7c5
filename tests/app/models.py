from django.db import models


class Item(models.Model):
    """A row the scenarios write, count and look for."""

    name = models.CharField(max_length=100, unique=True)
    value = models.IntegerField(default=0)

    class Meta:
        app_label = "app"
