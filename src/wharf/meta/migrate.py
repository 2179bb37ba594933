"""Schema migrations (Alembic), applied by `wharf db upgrade` and checked at start-up.

Alembic is imported only when a migration runs: checking that a schema is current is one
query, so commands that start often (garbage-collect) start fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration; tests/test_units.py checks it against the migrations directory.
HEAD = "0008"


class SchemaBehind(Exception):
    """The database's schema is older than this version of Wharf."""


def sync_url(url: str) -> str:
    """The synchronous driver URL for a configured database URL (migrations run synchronously)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.set(drivername="sqlite"))
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def _quiet_plugins() -> None:
    """Alembic (1.16 on) logs a line at INFO for each plugin it sets up ("setup plugin
    alembic.autogenerate.schemas", six of them), on every first start: shown at debug only."""
    plugins = logging.getLogger("alembic.runtime.plugins")
    if not plugins.isEnabledFor(logging.DEBUG):
        plugins.setLevel(logging.WARNING)


def _config(connection: sa.Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _prepare_sqlite_dir(url: str) -> None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def head_revision() -> str | None:
    _quiet_plugins()
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(url: str) -> str | None:
    _prepare_sqlite_dir(url)
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            revision: str | None = connection.scalar(sa.text("SELECT version_num FROM alembic_version"))
            return revision
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    _quiet_plugins()
    _prepare_sqlite_dir(url)
    engine = sa.create_engine(sync_url(url))
    try:
        if engine.dialect.name == "sqlite":
            # WAL is a property of the file: set it once here, before workers race to.
            with engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        from alembic import command

        with engine.begin() as connection:
            command.upgrade(_config(connection), revision)
    finally:
        engine.dispose()


def check_current(url: str) -> None:
    current, head = current_revision(url), HEAD
    if current != head:
        raise SchemaBehind(
            f"database schema is at {current or 'nothing'}, this Wharf needs {head}: run `wharf db upgrade`"
        )
