"""The one table the demo's worker writes: an order per job, tagged with who wrote it."""

from django.db import models


class Order(models.Model):
    engine = models.TextField()
    phase = models.TextField()
    token = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "orders"
        db_table = "orders_order"
