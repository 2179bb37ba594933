"""What every SQL domain shares: the database and its dialect, the hot-read path, batching,
a repository's row, and the rule of which blobs a repository may read, written once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from .. import schema as s
from ..clock import now as _now
from ..engines import Database

if TYPE_CHECKING:
    from .reads import Reader

T = TypeVar("T")

# A row another transaction deletes between our two statements: try again this many times.
ROW_RACE_ATTEMPTS = 3
# Rows per statement when a set of keys goes into IN (...): under every driver's parameter limit.
IN_BATCH = 2000


def batches(items: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def readable_in(
    repository_id: int | sa.ColumnElement[int], digest: sa.ColumnElement[str]
) -> sa.ColumnElement[bool]:
    """A blob the repository may read: linked there (pushed or mounted), or named by one of
    its manifests. Every read, HEAD, mount and manifest put asks this one rule."""
    linked = sa.select(s.repository_blobs.c.digest).where(
        s.repository_blobs.c.repository_id == repository_id, s.repository_blobs.c.digest == digest
    )
    referenced = (
        sa.select(s.manifest_blobs.c.digest)
        .join(s.manifests)
        .where(s.manifests.c.repository_id == repository_id, s.manifest_blobs.c.digest == digest)
    )
    return sa.or_(linked.exists(), referenced.exists())


@dataclass(frozen=True)
class SQL:
    """The plumbing one database's domains run on."""

    db: Database
    dialect: str  # "sqlite" or "postgresql"
    reader: Reader  # the hot reads, without the async engine where the database allows

    def insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql  # imported only where it is used: slow to import

            return postgresql.insert(table)
        return sqlite.insert(table)

    def ordered(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        # Byte order, whatever the database's locale: the spec asks for lexical order.
        return column.collate("C") if self.dialect == "postgresql" else column

    def repository_id(self, conn: sa.Connection, name: str, create: bool = False) -> int | None:
        found = conn.scalar(sa.select(s.repositories.c.id).where(s.repositories.c.name == name))
        if found is not None or not create:
            return found
        conn.execute(
            self.insert(s.repositories)
            .values(name=name, created_at=_now())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return conn.scalar(sa.select(s.repositories.c.id).where(s.repositories.c.name == name))
