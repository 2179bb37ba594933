"""Timestamps as the metadata store keeps them: UTC, and zone-aware when read back."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; every one stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
