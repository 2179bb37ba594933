"""Progress of long command-line work: a bar on a terminal, nothing in a log or a pipe."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress


def terminal_bar(description: str, quiet: bool, elapsed: bool = False) -> Progress | None:
    """A transient bar on stderr, with ``description`` (a rich column template) before it,
    when stderr is a terminal and the command is not quiet; else None. rich is imported
    only then."""
    if quiet or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn()]
    if elapsed:
        columns.append(TimeElapsedColumn())
    return Progress(*columns, console=Console(stderr=True), transient=True)
