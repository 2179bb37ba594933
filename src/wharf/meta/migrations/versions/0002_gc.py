"""garbage collection: manifests.last_seen_at, gc_pending and gc_runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("manifests") as batch:
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "gc_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("delete_untagged", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("grace_seconds", sa.Float(), nullable=False),
        sa.Column("blobs_marked", sa.BigInteger(), nullable=False),
        sa.Column("blobs_eligible", sa.BigInteger(), nullable=False),
        sa.Column("manifests_eligible", sa.BigInteger(), nullable=False),
        sa.Column("blobs_deleted", sa.BigInteger(), nullable=False),
        sa.Column("manifests_deleted", sa.BigInteger(), nullable=False),
        sa.Column("bytes_freed", sa.BigInteger(), nullable=False),
        sa.Column("files_deleted", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gc_runs")),
    )
    op.create_index(op.f("ix_gc_runs_started_at"), "gc_runs", ["started_at"], unique=False)
    op.create_table(
        "gc_pending",
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_gc_pending")),
    )


def downgrade() -> None:
    op.drop_table("gc_pending")
    op.drop_index(op.f("ix_gc_runs_started_at"), table_name="gc_runs")
    op.drop_table("gc_runs")
    with op.batch_alter_table("manifests") as batch:
        batch.drop_column("last_seen_at")
