"""garbage collection review queues, fed by triggers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 05:00:00

A blob or manifest enters its review queue when something may have made it garbage: a
blob when it is stored or when a manifest naming it goes; a manifest when it is pushed,
when it loses a tag, or when an index listing it or its subject goes. It leaves the queue
when it gains a reason to be kept that only a queued event can take away (a blob: a
manifest names it; a manifest: a tag points at it), or when garbage collection finds it
kept for such a reason, or when it is deleted. Garbage collection then reads the queues,
not the whole tables: its work grows with what may be garbage, not with the registry.

Triggers, not application code, feed the queues, so no write path can forget to. ``hits``
counts the times an entry was queued: garbage collection removes an entry it reviewed
only if nothing queued it again meanwhile.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUE_BLOB = (
    "INSERT INTO gc_blob_review (digest, hits) VALUES ({digest}, 1) "
    "ON CONFLICT (digest) DO UPDATE SET hits = gc_blob_review.hits + 1"
)
# "WHERE true": SQLite needs it to tell the ON CONFLICT of an INSERT ... SELECT from a join.
QUEUE_MANIFESTS = (
    "INSERT INTO gc_manifest_review (manifest_id, hits) SELECT id, 1 FROM manifests WHERE {where} "
    "ON CONFLICT (manifest_id) DO UPDATE SET hits = gc_manifest_review.hits + 1"
)
UNQUEUE_TAGGED = (
    "DELETE FROM gc_manifest_review WHERE manifest_id IN "
    "(SELECT id FROM manifests WHERE repository_id = NEW.repository_id AND digest = NEW.digest)"
)

# name: (timing and event, table, statements)
TRIGGERS: dict[str, tuple[str, str, list[str]]] = {
    "gc_review_blob_stored": ("AFTER INSERT", "blobs", [QUEUE_BLOB.format(digest="NEW.digest")]),
    "gc_review_blob_named": (
        "AFTER INSERT",
        "manifest_blobs",
        ["DELETE FROM gc_blob_review WHERE digest = NEW.digest"],
    ),
    "gc_review_blob_unnamed": ("AFTER DELETE", "manifest_blobs", [QUEUE_BLOB.format(digest="OLD.digest")]),
    "gc_review_manifest_pushed": (
        "AFTER INSERT",
        "manifests",
        [QUEUE_MANIFESTS.format(where="id = NEW.id AND true")],
    ),
    "gc_review_manifest_removed": (
        "BEFORE DELETE",
        "manifests",
        [
            QUEUE_MANIFESTS.format(
                where="repository_id = OLD.repository_id AND digest IN "
                "(SELECT child_digest FROM manifest_children WHERE parent_id = OLD.id)"
            ),
            QUEUE_MANIFESTS.format(where="repository_id = OLD.repository_id AND subject_digest = OLD.digest"),
        ],
    ),
    "gc_review_tag_set": ("AFTER INSERT", "tags", [UNQUEUE_TAGGED]),
    "gc_review_tag_moved": (
        "AFTER UPDATE OF digest",
        "tags",
        [
            QUEUE_MANIFESTS.format(
                where="repository_id = OLD.repository_id AND digest = OLD.digest AND OLD.digest <> NEW.digest"
            ),
            UNQUEUE_TAGGED,
        ],
    ),
    "gc_review_tag_removed": (
        "AFTER DELETE",
        "tags",
        [QUEUE_MANIFESTS.format(where="repository_id = OLD.repository_id AND digest = OLD.digest")],
    ),
}


def create_triggers(dialect: str) -> list[str]:
    statements = []
    for name, (when, table, body) in TRIGGERS.items():
        if dialect == "postgresql":
            result = "OLD" if when.startswith("BEFORE DELETE") else "NULL"
            statements.append(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                + "; ".join(body)
                + f"; RETURN {result}; END $$"
            )
            statements.append(
                f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        else:
            statements.append(
                f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW BEGIN " + "; ".join(body) + "; END"
            )
    return statements


def upgrade() -> None:
    op.create_table(
        "gc_blob_review",
        sa.Column("digest", sa.String(length=150), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest"], ["blobs.digest"], name=op.f("fk_gc_blob_review_digest_blobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_gc_blob_review")),
    )
    op.create_table(
        "gc_manifest_review",
        sa.Column("manifest_id", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifests.id"],
            name=op.f("fk_gc_manifest_review_manifest_id_manifests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("manifest_id", name=op.f("pk_gc_manifest_review")),
    )
    # Which indexes list a manifest: looked up when a queued manifest's parents are read.
    op.create_index(
        op.f("ix_manifest_children_child_digest"), "manifest_children", ["child_digest"], unique=False
    )
    for statement in create_triggers(op.get_bind().dialect.name):
        op.execute(statement)
    # Everything already stored is reviewed once, by the first collection after the upgrade.
    op.execute("INSERT INTO gc_blob_review (digest, hits) SELECT digest, 1 FROM blobs")
    op.execute(
        "INSERT INTO gc_manifest_review (manifest_id, hits) SELECT m.id, 1 FROM manifests m "
        "WHERE NOT EXISTS "
        "(SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest)"
    )
    op.execute("DELETE FROM gc_blob_review WHERE digest IN (SELECT digest FROM manifest_blobs)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, (_when, table, _body) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER {name}" + (f" ON {table}" if dialect == "postgresql" else ""))
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_index(op.f("ix_manifest_children_child_digest"), table_name="manifest_children")
    op.drop_table("gc_manifest_review")
    op.drop_table("gc_blob_review")
