"""The metadata schema as SQLAlchemy Core tables; migrations/ must produce exactly this."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Timestamp = sa.DateTime(timezone=True)

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    # Who may pull without access of their own: "private" (the default) or "public".
    sa.Column("visibility", sa.String(16), nullable=False, server_default="private"),
    sa.Column("short_description", sa.String(140), nullable=False, server_default=""),
    sa.Column("long_description", sa.Text, nullable=False, server_default=""),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", sa.String(150), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # Refreshed by every upload, mount or HEAD of the blob: GC's grace period counts from here.
    sa.Column("last_seen_at", Timestamp, nullable=False),
)

repository_blobs = sa.Table(
    "repository_blobs",
    metadata,
    sa.Column(
        "repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("digest", sa.String(150), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "digest"),
)

manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("digest", sa.String(150), nullable=False),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("config_digest", sa.String(150), nullable=True),
    sa.Column("subject_digest", sa.String(150), nullable=True),
    sa.Column("artifact_type", sa.String(255), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # Refreshed when the manifest is pushed again: an untagged manifest's grace period counts
    # from here (NULL: from created_at, for rows older than the column).
    sa.Column("last_seen_at", Timestamp, nullable=True),
    sa.UniqueConstraint("repository_id", "digest"),
    sa.Index(None, "repository_id", "subject_digest"),
)

manifest_blobs = sa.Table(
    "manifest_blobs",
    metadata,
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(150), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Index(None, "digest"),
)

manifest_children = sa.Table(
    "manifest_children",
    metadata,
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("child_digest", sa.String(150), primary_key=True),
    sa.Index(None, "child_digest"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column(
        "repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("digest", sa.String(150), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index(None, "repository_id", "digest"),
)

# Who moved or removed which tag when: makes deleted tags restorable until GC.
tag_history = sa.Table(
    "tag_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("old_digest", sa.String(150), nullable=True),
    sa.Column("new_digest", sa.String(150), nullable=True),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index(None, "repository_id", "name"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("repository", sa.String(255), nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index(None, "repository"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("repository", sa.String(255), nullable=True),
    sa.Column("reference", sa.String(255), nullable=True),
    sa.Column("digest", sa.String(150), nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.Index(None, "at"),
    sa.Index(None, "repository", "at"),
)

# Blobs whose rows garbage collection deleted, until their bytes are deleted too: what a
# crash in between leaves is finished by the next run without listing all of storage.
gc_pending = sa.Table(
    "gc_pending",
    metadata,
    sa.Column("digest", sa.String(150), primary_key=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=True),  # null: journalled before it was kept
)

# Blobs whose bytes a deleter (a collection, ``fsck --repair``) is deleting now, and until
# when its deletion may still act: a push of one of them waits the lease out before storing
# its bytes, so a deletion that outlives its digest section (its database connection ended,
# its process was killed with a request on the way to S3) cannot take the new bytes.
blob_deletes = sa.Table(
    "blob_deletes",
    metadata,
    sa.Column("digest", sa.String(150), primary_key=True),
    sa.Column("holder", sa.String(32), primary_key=True),  # one a deletion: each ends its own
    sa.Column("until", Timestamp, nullable=False),  # the database's clock, on PostgreSQL
)

# Review queues: what may have become garbage since the last collection, fed by triggers
# (migration 0004 says when). ``hits`` counts the times an entry was queued.
gc_blob_review = sa.Table(
    "gc_blob_review",
    metadata,
    sa.Column("digest", sa.String(150), sa.ForeignKey("blobs.digest", ondelete="CASCADE"), primary_key=True),
    sa.Column("hits", sa.Integer, nullable=False),
)

gc_manifest_review = sa.Table(
    "gc_manifest_review",
    metadata,
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("hits", sa.Integer, nullable=False),
)

# What each garbage collection found and freed, and how it ended.
gc_runs = sa.Table(
    "gc_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=True),
    # running, done, stopped (asked to, or out of time), failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("delete_untagged", sa.Boolean, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("grace_seconds", sa.Float, nullable=False),
    sa.Column("blobs_marked", sa.BigInteger, nullable=False, default=0),
    sa.Column("blobs_eligible", sa.BigInteger, nullable=False, default=0),
    sa.Column("manifests_eligible", sa.BigInteger, nullable=False, default=0),
    sa.Column("blobs_deleted", sa.BigInteger, nullable=False, default=0),
    sa.Column("manifests_deleted", sa.BigInteger, nullable=False, default=0),
    sa.Column("bytes_freed", sa.BigInteger, nullable=False, default=0),
    sa.Column("files_deleted", sa.BigInteger, nullable=False, default=0),
    sa.Column("bytes_eligible", sa.BigInteger, nullable=False, default=0),
    # Kept only by the grace period: how many blobs, their bytes, and when all are due.
    sa.Column("grace_kept_blobs", sa.BigInteger, nullable=False, default=0),
    sa.Column("grace_kept_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("grace_kept_until", Timestamp, nullable=True),
    sa.Index(None, "started_at"),
    # lastSavings: the newest real run, found without reading the dry runs after it.
    sa.Index("ix_gc_runs_dry_run_id", "dry_run", "id"),
)

# Background work (garbage collection, imports, upload purging), claimed by workers through
# the database so that each job runs once whatever the number of replicas.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("action", sa.String(64), nullable=False),
    # waiting, running, done, errors, stopped
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("worker", sa.String(255), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("parameters", sa.JSON, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("scheduled_at", Timestamp, nullable=False),  # not to start before
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("ended_at", Timestamp, nullable=True),
    sa.Column("heartbeat_at", Timestamp, nullable=True),
    sa.Column("stop_requested", sa.Boolean, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # Who asked for the job (a user, "scheduler", "cli"); NULL for jobs older than the column.
    sa.Column("created_by", sa.String(255), nullable=True),
    sa.Index(None, "status", "scheduled_at"),
    sa.Index(None, "created_at"),
)

job_logs = sa.Table(
    "job_logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("line", sa.Text, nullable=False),
    sa.Index(None, "job_id"),
)

# Each time a schedule fired: the replica whose row goes in creates the job (once across replicas).
schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("due", Timestamp, primary_key=True),
    sa.Column("job_id", sa.String(36), nullable=True),
)

# Documents of settings changed through the admin API (the GC schedule, its duration, its mode).
settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# Accounts: users (who sign in) and organizations (namespaces shared by their teams). A
# name is a namespace: a user's own, or an organization's.
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "user" or "organization"
    sa.Column("password_hash", sa.String(255), nullable=True),  # argon2id; users only
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),  # a system administrator
    sa.Column("created_at", Timestamp, nullable=False),
)

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("org_id", "name"),
)

team_members = sa.Table(
    "team_members",
    metadata,
    sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Index(None, "user_id"),
)

# A team's access to one repository, or to every repository of a namespace (existing or to
# come): "read-only", "read-write" or "admin".
repository_team_access = sa.Table(
    "repository_team_access",
    metadata,
    sa.Column(
        "repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Index(None, "team_id"),
)

namespace_team_access = sa.Table(
    "namespace_team_access",
    metadata,
    sa.Column("namespace", sa.String(255), primary_key=True),
    sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Index(None, "team_id"),
)

# Personal access tokens: only a hash of each is kept (they are long random secrets, so
# SHA-256 suffices and a lookup by it is one index probe).
access_tokens = sa.Table(
    "access_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=True),
    sa.Column("last_used_at", Timestamp, nullable=True),
    sa.Index(None, "user_id"),
)
