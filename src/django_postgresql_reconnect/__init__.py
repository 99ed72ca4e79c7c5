"""A Django PostgreSQL backend that recovers from lost connections, safely."""

__version__ = "2.0.0.dev0"
