"""Signals sent around a lost connection, for metrics, alerts and refreshed credentials.

Each is sent with ``sender`` set to the ``DatabaseWrapper`` class (``None`` for the breaker,
which belongs to no one connection) and ``alias`` to the database alias. No payload carries a
password, a parameter of a statement or any other secret of the settings.
"""

from django.dispatch import Signal

__all__ = [
    "connection_lost",
    "decided",
    "pre_reconnect",
    "reconnected",
    "session_restored",
]

connection_lost = Signal()
"""A connection of ``alias`` was found dead. Arguments: ``connection`` (the wrapper),
``alias``, ``error`` (the driver's exception, or None when the socket look found it dead
before use), ``sent`` (whether a statement may have reached the server)."""

pre_reconnect = Signal()
"""A connection attempt is about to be made after a loss. Arguments: ``connection`` (the
wrapper: a receiver may put a fresh password or IAM token in ``connection.settings_dict``),
``alias``, ``attempt`` (1 for the first attempt)."""

reconnected = Signal()
"""A connection was opened after a loss. Arguments: ``connection``, ``alias``, ``attempts``,
``seconds`` (from the loss to the new connection). Sent once per loss, also when the loss
raised and the new connection was opened by a later statement."""

session_restored = Signal()
"""Session settings of a lost connection were replayed on its replacement. Arguments:
``connection``, ``alias``, ``settings`` (the names, such as ``['search_path', 'role']``;
never their values)."""

decided = Signal()
"""The engine decided what a loss (or the breaker) means. Arguments: ``alias``, ``decision``
(one of ``events.DECISIONS``), ``attempts``, ``seconds``, ``sqlstate``, ``backend_pid`` (each
None where it does not apply), ``connection`` (the wrapper, None for the breaker)."""
