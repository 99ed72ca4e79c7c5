"""The table of ``models.Order``, as DDL the demo runs on each server before Django starts."""

# The DDL the demo runs on each server (the same on Django 4.2 to 6): no unique constraint on
# token, on purpose, so that a write applied twice shows up as two rows instead of an error.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS orders_order (
    id bigserial PRIMARY KEY,
    engine text NOT NULL,
    phase text NOT NULL,
    token text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
)
"""
