"""ENGINE 'django_postgresql_reconnect.postgis': GeoDjango's backend recovers the same way.

Needs a PostgreSQL with the PostGIS extension (Debian: postgresql-15-postgis-3, whose server
binaries are in /usr/lib/postgresql/15/bin) and the GDAL/GEOS libraries GeoDjango loads
(libgdal32, libgeos-c1v5). ``.ci/run`` installs them; elsewhere the module is skipped with the
reason, unless DPR_REQUIRE_ROOT_TESTS=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from django_postgresql_reconnect.testing import PostgresServer
from django_postgresql_reconnect.testing.pytest_plugin import REQUIRE_ROOT_ENV
from tests.faults import backend_pid, wait_until_server_hung_up

BINDIR = Path(os.environ.get("DPR_POSTGIS_BINDIR", "/usr/lib/postgresql/15/bin"))
# Debian's layout: /usr/lib/postgresql/<major>/bin and /usr/share/postgresql/<major>/extension.
EXTENSION = Path("/usr/share/postgresql", BINDIR.parent.name, "extension", "postgis.control")
PACKAGES = "postgresql-15 postgresql-15-postgis-3 libgdal32 libgeos-c1v5"
ALIAS = "geo"


def _missing() -> str | None:
    """Say what is missing for these scenarios, or None when everything is there."""
    if not (BINDIR / "postgres").exists():
        return f"no PostgreSQL server binaries in {BINDIR}"
    if not EXTENSION.exists():
        return f"no PostGIS extension ({EXTENSION} is missing)"
    try:
        from django.contrib.gis.geos import Point  # noqa: F401  (loads GEOS and GDAL)
    except Exception as error:  # ImproperlyConfigured, OSError: the libraries are missing
        return f"GeoDjango cannot load GDAL/GEOS: {error}"
    return None


_reason = _missing()
if _reason is not None:
    message = f"PostGIS scenarios need {PACKAGES} (apt-get install -y): {_reason}"
    if os.environ.get(REQUIRE_ROOT_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ROOT_ENV}=1 forbids skipping them)", pytrace=False)
    pytest.skip(message, allow_module_level=True)

from django.contrib.gis.db import models  # noqa: E402
from django.contrib.gis.geos import Point  # noqa: E402


class Place(models.Model):
    """A row with a geometry, in a table the module's own PostGIS server holds."""

    name = models.CharField(max_length=100)
    location = models.PointField(srid=4326)
    # What Django adds anyway, named so that mypy knows it (the model is not in an app's models).
    objects: ClassVar[models.Manager[Place]] = models.Manager()

    class Meta:
        app_label = "app"
        db_table = "scenario_place"
        managed = False


@pytest.fixture(scope="module")
def postgis_server() -> Iterator[PostgresServer]:
    """A second PostgreSQL, from Debian's packages, with PostGIS and an alias for it."""
    with PostgresServer(bindir=BINDIR, auth="password", password="geo-pw") as server:
        server.create_database("geo")
        server.execute("CREATE EXTENSION postgis", dbname="geo")
        server.execute(
            "CREATE TABLE scenario_place (id serial PRIMARY KEY, name varchar(100) NOT NULL,"
            " location geometry(Point, 4326) NOT NULL)",
            dbname="geo",
        )
        entry = server.database_settings(
            engine="django_postgresql_reconnect.postgis",
            name="geo",
            CONN_MAX_AGE=None,
            OPTIONS={"sslmode": "disable"},
        )
        # configure_settings() insists on a default alias; the configured one passes unchanged.
        databases = {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], ALIAS: entry}
        connections.settings[ALIAS] = connections.configure_settings(databases)[ALIAS]
        try:
            yield server
        finally:
            connections[ALIAS].close()
            del connections.settings[ALIAS]
            del connections[ALIAS]


@pytest.fixture
def geo(postgis_server: PostgresServer) -> Iterator[PostgresServer]:
    postgis_server.execute("TRUNCATE scenario_place RESTART IDENTITY", dbname="geo")
    yield postgis_server


def place_names(server: PostgresServer) -> list[str]:
    return [
        row[0]
        for row in server.execute("SELECT name FROM scenario_place ORDER BY id", dbname="geo")
    ]


def near_origin() -> list[str]:
    origin = Point(0, 0, srid=4326)
    return list(
        Place.objects.using(ALIAS)
        .filter(location__dwithin=(origin, 1.0))
        .order_by("name")
        .values_list("name", flat=True)
    )


def test_spatial_query_succeeds_on_first_call_after_backend_terminated(geo):
    Place.objects.using(ALIAS).create(name="near", location=Point(0.5, 0.5, srid=4326))
    Place.objects.using(ALIAS).create(name="far", location=Point(20, 20, srid=4326))
    assert near_origin() == ["near"]
    first_pid = backend_pid(ALIAS)
    geo.terminate_backends()
    wait_until_server_hung_up(ALIAS)

    assert near_origin() == ["near"]
    assert backend_pid(ALIAS) != first_pid


def test_geometries_load_on_the_replacement_connection(geo):
    """The replacement connection gets GeoDjango's type adapters, as a first one does."""
    Place.objects.using(ALIAS).create(name="spot", location=Point(1, 2, srid=4326))
    geo.terminate_backends()
    wait_until_server_hung_up(ALIAS)

    location = Place.objects.using(ALIAS).get(name="spot").location

    assert isinstance(location, Point)
    assert (location.x, location.y, location.srid) == (1, 2, 4326)


def test_spatial_write_after_termination_runs_once(geo):
    Place.objects.using(ALIAS).count()
    geo.terminate_backends()
    wait_until_server_hung_up(ALIAS)

    with transaction.atomic(using=ALIAS):
        Place.objects.using(ALIAS).create(name="a", location=Point(0, 0, srid=4326))
        Place.objects.using(ALIAS).create(name="b", location=Point(0.1, 0.1, srid=4326))

    assert place_names(geo) == ["a", "b"]
