"""Where things live under the storage root, drawn once.

Blobs follow CNCF Distribution's layout, so a Distribution data directory can be adopted
by building metadata only::

    <root>/docker/registry/v2/
        blobs/
            sha256/
                ab/
                    abcdef0123.../
                        data            the blob's bytes
        repositories/...                Distribution's links (read by import, never written)
    <root>/wharf/uploads/
        <upload id>/
            data                        bytes received so far, renamed into blobs/ when verified

Uploads live under the same root as blobs so that the final rename stays on one filesystem.
"""

from __future__ import annotations

from pathlib import Path

BLOBS = Path("docker/registry/v2/blobs")
UPLOADS = Path("wharf/uploads")


def blob_path(digest: str) -> Path:
    """Relative path of a blob's data; the digest must already be validated."""
    algorithm, hex_ = digest.split(":", 1)
    return BLOBS / algorithm / hex_[:2] / hex_ / "data"


def upload_path(upload_id: str) -> Path:
    return UPLOADS / upload_id / "data"
