"""The `wharf` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from .config import ConfigError, Settings, load_settings
from .meta import migrate

log = logging.getLogger("wharf")


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wharf")
def main() -> None:
    """Wharf: a container image registry where deleting frees space and never corrupts an image."""


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--server",
    type=click.Choice(["granian", "uvicorn"]),
    default="granian",
    show_default=True,
    help="HTTP server running the app (granian sends blobs without copying them through Python).",
)
def serve(config: str | None, server: str) -> None:
    """Run the registry. With no CONFIG: 127.0.0.1:5000, everything in ./data."""
    settings = _settings(config)
    logging.basicConfig(level=settings.log.level.upper().replace("WARN", "WARNING").replace("INGING", "ING"))
    url = settings.database_url
    Path(settings.storage.filesystem.rootdirectory).mkdir(parents=True, exist_ok=True)
    if _is_sqlite(url):
        # The embedded default keeps itself current; a shared database is upgraded on purpose.
        migrate.upgrade(url)
    else:
        try:
            migrate.check_current(url)
        except migrate.SchemaBehind as exc:
            raise click.ClickException(str(exc)) from None
    if config:
        os.environ["WHARF_CONFIG"] = str(Path(config).resolve())
    http = settings.http
    click.echo(
        f"wharf: serving on http://{http.addr} with {http.workers} worker(s), data in "
        f"{Path(settings.storage.filesystem.rootdirectory).resolve()}",
        err=True,
    )
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "wharf.app:app_from_environment",
            factory=True,
            host=http.host,
            port=http.port,
            workers=http.workers,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
        )
        return
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "wharf.app:app_from_environment",
        factory=True,
        address=http.host,
        port=http.port,
        interface=Interfaces.ASGI,
        workers=http.workers,
        log_access=False,
        log_level="warning",  # type: ignore[arg-type]
    ).serve()


@main.group()
def db() -> None:
    """The metadata database."""


@db.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
def upgrade(config: str | None) -> None:
    """Apply schema migrations to the configured database."""
    settings = _settings(config)
    url = settings.database_url
    before = migrate.current_revision(url)
    migrate.upgrade(url)
    after = migrate.current_revision(url)
    click.echo(f"database schema: {before or 'empty'} -> {after}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
