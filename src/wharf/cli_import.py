"""`wharf import-distribution`: the importer on a terminal (a progress bar) or in a log (quiet)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from .config import Settings
from .meta.sql import SQLMetadataStore
from .progress import terminal_bar
from .services.caller import COMMAND_LINE, Caller
from .services.importer import DistributionImporter, ImportBusy, NotADistributionDirectory


def run_import(settings: Settings, root: Path, quiet: bool) -> int:
    return asyncio.run(_run(settings, root, quiet))


async def _run(settings: Settings, root: Path, quiet: bool) -> int:
    meta = SQLMetadataStore(settings.database_url)
    try:
        try:
            importer = DistributionImporter(meta, root)
        except NotADistributionDirectory as exc:
            click.echo(f"wharf import-distribution: {exc}", err=True)
            return 1
        bar = terminal_bar("importing {task.fields[repository]}", quiet)
        if bar is not None:
            task = bar.add_task("import", total=None, repository="")
            bar.start()

        def progress(done: int, total: int, name: str) -> None:
            if bar is not None:
                bar.update(task, completed=done, total=total, repository=name)

        try:
            report = await importer.run(Caller.local(COMMAND_LINE), progress)
        except ImportBusy as exc:
            click.echo(f"wharf import-distribution: {exc}", err=True)
            return 2
        except Exception as exc:
            click.echo(f"wharf import-distribution: failed: {type(exc).__name__}: {exc}", err=True)
            return 1
        finally:
            if bar is not None:
                bar.stop()
    finally:
        await meta.close()
    if not quiet:
        for problem in report.skipped:
            click.echo(f"skipped: {problem}")
    click.echo(
        f"imported {report.repositories} repositories: {report.manifests} manifests, {report.tags} tags, "
        f"{report.blobs} blobs added ({len(report.skipped)} items skipped); no blob was copied"
    )
    return 0
