"""The migrations build exactly the schema the code declares (meta/schema.py), on both
backends: a column or index added to one and not the other is found here, not in production."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from wharf.meta import migrate
from wharf.meta import schema as s


def test_the_migrations_build_the_declared_schema(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), s.metadata)
    finally:
        engine.dispose()
    assert differences == []
    assert migrate.current_revision(database_url) == migrate.HEAD
