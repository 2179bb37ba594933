"""Helpers of the metadata store's suites (tests/test_meta_*.py), one per domain, each run on
every backend through the ``store`` fixture (tests/conftest.py)."""

from __future__ import annotations

import hashlib

from wharf.meta.events import Event
from wharf.meta.manifests import NewManifest

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EVENT = Event("tester", "test")


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest(
    name: str, blobs: tuple[str, ...] = (), children: tuple[str, ...] = (), subject: str | None = None
) -> NewManifest:
    payload = f'{{"name":"{name}"}}'.encode()
    return NewManifest(
        digest=digest(name),
        media_type=INDEX if children else MANIFEST,
        payload=payload,
        config_digest=blobs[0] if blobs else None,
        subject_digest=subject,
        artifact_type="application/vnd.example" if subject else None,
        blobs=blobs,
        children=children,
    )
