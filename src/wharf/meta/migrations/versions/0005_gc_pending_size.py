"""gc_pending remembers each blob's size, so a dry run and the run after a crash count it;
uploads are indexed by repository, for the bound on the sessions one repository holds open

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Entries written before this revision have no size: they count as 0 bytes.
    op.add_column("gc_pending", sa.Column("size", sa.BigInteger(), nullable=True))
    op.create_index("ix_uploads_repository", "uploads", ["repository"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_uploads_repository", table_name="uploads")
    with op.batch_alter_table("gc_pending") as batch:
        batch.drop_column("size")
