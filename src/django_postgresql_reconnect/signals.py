"""Signals sent around a lost connection, for metrics, alerts and refreshed credentials.

Each is sent with ``sender`` set to the ``DatabaseWrapper`` class and ``connection`` to the
wrapper; ``alias`` is the database alias.
"""

from django.dispatch import Signal

__all__ = ["connection_lost", "pre_reconnect", "reconnected"]

connection_lost = Signal()
"""A connection of ``alias`` was found dead. Arguments: ``connection``, ``alias``, ``error``
(the driver's exception, or None when the socket look found it dead before use)."""

pre_reconnect = Signal()
"""A replacement connection is about to be opened. Arguments: ``connection``, ``alias``,
``settings_dict`` (mutable: a receiver may put a fresh password or IAM token in it),
``attempt`` (1 for the first attempt)."""

reconnected = Signal()
"""A replacement connection is open. Arguments: ``connection``, ``alias``, ``attempts``,
``seconds`` (from the loss to the new connection)."""
