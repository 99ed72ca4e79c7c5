"""End-to-end check of the lab: a throwaway server, a killed session, a fresh connection.

Run it with `python3 dev.py demo`. It shows the failure this package exists for (a connection
whose backend died fails every query) using only the driver, no Django yet.
"""

from __future__ import annotations

import sys
import time

from django_postgresql_reconnect.testing import PostgresServer

try:
    import psycopg as driver
except ImportError:  # pragma: no cover - the demo installs both drivers
    import psycopg2 as driver  # type: ignore[no-redef]


def main() -> int:
    started = time.monotonic()
    with PostgresServer() as server:
        print(f"server      PostgreSQL on {server.host}:{server.port} ({server.bindir})")
        connection = driver.connect(server.dsn(), application_name="demo")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE greeting (id serial PRIMARY KEY, text text)")
            cursor.execute("INSERT INTO greeting (text) VALUES ('hello'), ('world')")
            cursor.execute("SELECT text FROM greeting ORDER BY id")
            rows = [text for (text,) in cursor.fetchall()]
        print(f"inserted    {rows}")

        killed = server.terminate_backends(application_name="demo")
        print(f"terminated  {killed} backend(s), as a server restart or failover would")

        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM greeting")
            print("old conn    still works (unexpected)")
            return 1
        except driver.OperationalError as error:
            first_line = str(error).strip().splitlines()[0]
            print(f"old conn    fails: {type(error).__name__}: {first_line}")

        fresh = driver.connect(server.dsn())
        with fresh.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM greeting")
            row = cursor.fetchone()
        fresh.close()
        print(f"new conn    works: {row[0] if row else 0} rows still there")
    print(f"done        in {time.monotonic() - started:.1f} s; server stopped and deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
