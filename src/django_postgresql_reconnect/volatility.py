"""Can this statement write? Asked of the server itself, after a loss, never before.

A SELECT that calls a function writes when the function does: a VOLATILE user function, a
queue extension's ``send()``, ``pg_logical_slot_get_changes()``. PostgreSQL knows which
functions cannot modify the database: IMMUTABLE and STABLE ones (PL/pgSQL, SQL and the other
SPI languages refuse to write from them). So after a lost reply, on the new connection and
before any re-run, one query asks ``pg_proc`` about every function the statement calls,
every operator it uses, and every view or row-level security policy it reads through.

Unknown means "may write": a name the server does not know, a VOLATILE overload anywhere on
the search path. A few volatile built-ins that write nothing (``random()``,
``clock_timestamp()``, ``gen_random_uuid()``...) are allowed, and only in ``pg_catalog``.

Answers are cached per server, user and search_path for ``CACHE_SECONDS``, so that a burst of
losses asks once, and so that a lost read can still be told a read when the server is
unreachable. The first question is always asked of the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from . import drivers
from .statements import Facts

__all__ = ["CACHE_SECONDS", "HARMLESS_VOLATILE", "cannot_write", "known_cannot_write"]

CACHE_SECONDS = 300.0
_CACHE_ENTRIES = 10_000

HARMLESS_VOLATILE = (
    "random",
    "random_normal",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
)
"""Volatile functions of ``pg_catalog`` that write nothing: running them twice is harmless."""

# One round trip: per function name, per operator and per relation, may it write?
_QUERY = """
WITH RECURSIVE wanted_functions(nsp, name) AS (SELECT * FROM unnest(%s::text[], %s::text[])),
wanted_relations(nsp, name) AS (SELECT * FROM unnest(%s::text[], %s::text[])),
functions AS (
    SELECT w.nsp, w.name, count(p.oid) AS found,
           coalesce(bool_and(p.provolatile <> 'v'
                             OR (n.nspname = 'pg_catalog' AND p.proname = ANY (%s::text[]))),
                    false) AS safe
    FROM wanted_functions w
    LEFT JOIN pg_namespace n
      ON (w.nsp IS NULL AND n.nspname = ANY (current_schemas(true))) OR n.nspname = w.nsp
    LEFT JOIN pg_proc p ON p.pronamespace = n.oid AND p.proname = w.name
    GROUP BY w.nsp, w.name
),
roots AS (
    SELECT w.nsp, w.name, c.oid
    FROM wanted_relations w
    JOIN pg_namespace n
      ON (w.nsp IS NULL AND n.nspname = ANY (current_schemas(true))) OR n.nspname = w.nsp
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name
),
reach(nsp, name, oid) AS (
    SELECT nsp, name, oid FROM roots
    UNION
    SELECT reach.nsp, reach.name, d.refobjid
    FROM reach
    JOIN pg_rewrite r ON r.ev_class = reach.oid
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> reach.oid
),
called(nsp, name, proc) AS (
    SELECT reach.nsp, reach.name,
           CASE WHEN d.refclassid = 'pg_operator'::regclass THEN o.oprcode::oid
                ELSE d.refobjid END
    FROM reach
    LEFT JOIN pg_rewrite r ON r.ev_class = reach.oid
    LEFT JOIN pg_policy pol ON pol.polrelid = reach.oid
    JOIN pg_depend d ON (d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid)
                     OR (d.classid = 'pg_policy'::regclass AND d.objid = pol.oid)
    LEFT JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
    WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass)
),
relations AS (
    SELECT w.nsp, w.name,
           NOT EXISTS (
               SELECT FROM called
               JOIN pg_proc p ON p.oid = called.proc
               JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE called.nsp IS NOT DISTINCT FROM w.nsp AND called.name = w.name
                 AND p.provolatile = 'v'
                 AND NOT (n.nspname = 'pg_catalog' AND p.proname = ANY (%s::text[]))
           ) AS safe
    FROM wanted_relations w
),
operators AS (
    SELECT name, coalesce(bool_and(p.provolatile <> 'v'), true) AS safe
    FROM unnest(%s::text[]) AS name
    LEFT JOIN pg_operator o ON o.oprname = name
    LEFT JOIN pg_proc p ON p.oid = o.oprcode
    GROUP BY name
)
SELECT 'f', nsp, name, found > 0 AND safe FROM functions
UNION ALL SELECT 'r', nsp, name, safe FROM relations
UNION ALL SELECT 'o', NULL, name, safe FROM operators
"""

_Key = tuple[Any, ...]
_cache: dict[tuple[_Key, str, str | None, str], tuple[bool, float]] = {}
_lock = threading.Lock()


def _wanted(facts: Facts) -> list[tuple[str, str | None, str]]:
    wanted: list[tuple[str, str | None, str]] = [("f", s, n) for s, n in facts.functions]
    wanted.extend(("r", s, n) for s, n in facts.relations)
    wanted.extend(("o", None, op) for op in facts.operators)
    return wanted


def known_cannot_write(facts: Facts, key: _Key) -> bool | None:
    """The cached answer: True or False when every name is known, else None."""
    now = time.monotonic()
    verdict = True
    for kind, schema, name in _wanted(facts):
        entry = _cache.get((key, kind, schema, name))
        if entry is None or entry[1] < now:
            return None
        verdict = verdict and entry[0]
    return verdict


def cannot_write(connection: Any, facts: Facts, key: _Key) -> bool:
    """Ask the server (one round trip, on ``connection``) whether ``facts`` can write."""
    known = known_cannot_write(facts, key)
    if known is not None:
        return known
    functions = sorted(facts.functions, key=str)
    relations = sorted(facts.relations, key=str)
    rows = drivers.execute(
        connection,
        _QUERY,
        [
            [s for s, _ in functions],
            [n for _, n in functions],
            [s for s, _ in relations],
            [n for _, n in relations],
            list(HARMLESS_VOLATILE),
            list(HARMLESS_VOLATILE),
            sorted(facts.operators),
        ],
    )
    _remember(key, ((kind, schema, name, bool(safe)) for kind, schema, name, safe in rows))
    verdict = known_cannot_write(facts, key)
    return bool(verdict)


def _remember(key: _Key, answers: Iterable[tuple[str, str | None, str, bool]]) -> None:
    expires = time.monotonic() + CACHE_SECONDS
    with _lock:
        if len(_cache) > _CACHE_ENTRIES:
            _cache.clear()
        for kind, schema, name, safe in answers:
            _cache[(key, kind, schema, name)] = (safe, expires)


def forget() -> None:
    """Drop every cached answer (tests; a deployment that changed function volatility)."""
    with _lock:
        _cache.clear()
