"""gc_runs say what a dry run would free and what only the grace period kept; the last
real run is found by an index, however many dry runs came after it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTS = ("bytes_eligible", "grace_kept_blobs", "grace_kept_bytes")


def upgrade() -> None:
    with op.batch_alter_table("gc_runs") as batch:
        # Runs recorded before this revision count 0 for each.
        for name in COUNTS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("grace_kept_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("gc_runs") as batch:
        for name in COUNTS:
            batch.alter_column(name, server_default=None)
    op.create_index("ix_gc_runs_dry_run_id", "gc_runs", ["dry_run", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_gc_runs_dry_run_id", table_name="gc_runs")
    with op.batch_alter_table("gc_runs") as batch:
        batch.drop_column("grace_kept_until")
        for name in reversed(COUNTS):
            batch.drop_column(name)
