"""Pick the database driver for a test run from DPR_TEST_DRIVER (psycopg or psycopg2)."""

from __future__ import annotations

import os
import sys


def select_driver() -> str:
    """Hide psycopg 3 when DPR_TEST_DRIVER=psycopg2, so Django falls back to psycopg2.

    Call it before Django is imported: Django picks its driver at import time. A ``None``
    entry in ``sys.modules`` makes ``import psycopg`` raise ImportError, as if not installed.
    """
    driver = os.environ.get("DPR_TEST_DRIVER", "psycopg")
    if driver == "psycopg2":
        for name in ("psycopg", "psycopg_pool"):
            if sys.modules.get(name) is not None:
                raise RuntimeError(f"{name} was imported before select_driver() could hide it")
            sys.modules[name] = None  # type: ignore[assignment]
    elif driver != "psycopg":
        raise ValueError(f"DPR_TEST_DRIVER must be psycopg or psycopg2, not {driver!r}")
    return driver
