"""Reading manifests: which media type a payload is, and what it references.

Pure functions over bytes, so they are tested on their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import MANIFEST_INVALID, RegistryError
from ..meta.manifests import NewManifest
from ..reference import INT64_MAX, is_media_type, is_valid_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
SUPPORTED = IMAGE_TYPES | INDEX_TYPES
SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
# Layers that live elsewhere (their descriptor carries URLs): the registry need not hold them.
NONDISTRIBUTABLE = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ParsedManifest:
    media_type: str
    config_digest: str | None
    subject_digest: str | None
    artifact_type: str | None
    blobs: tuple[str, ...]
    children: tuple[str, ...]


def _invalid(reason: str) -> RegistryError:
    return RegistryError(MANIFEST_INVALID, {"reason": reason}, f"manifest invalid: {reason}")


def _descriptor(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a descriptor object")
    digest = value.get("digest")
    if not isinstance(digest, str) or not is_valid_digest(digest):
        raise _invalid(f"{where}.digest is missing or not a valid digest")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= INT64_MAX:
        raise _invalid(f"{where}.size must be an integer from 0 to {INT64_MAX}")
    media_type = value.get("mediaType")
    if media_type is not None and not isinstance(media_type, str):
        raise _invalid(f"{where}.mediaType must be a string")
    return value


def _descriptors(document: dict[str, Any], key: str, required: bool) -> list[dict[str, Any]]:
    value = document.get(key)
    if value is None:
        if required:
            raise _invalid(f"{key} is required")
        return []
    if not isinstance(value, list):
        raise _invalid(f"{key} must be a list")
    return [_descriptor(item, f"{key}[{i}]") for i, item in enumerate(value)]


def _stored_in_registry(descriptor: dict[str, Any]) -> bool:
    return not (descriptor.get("mediaType") in NONDISTRIBUTABLE and descriptor.get("urls"))


def parse_manifest(payload: bytes, content_type: str | None) -> ParsedManifest:
    """Validate a manifest payload and list what it references.

    The media type comes from the payload's own ``mediaType`` or the request's
    Content-Type; when both are given they must agree.
    """
    try:
        # UTF-8 alone, as JSON on the wire must be (RFC 8259): json.loads would also take
        # UTF-16 and UTF-32 bytes, which no client reads back as the manifest it digested.
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"not UTF-8: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid(f"not valid JSON: {exc}") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise _invalid(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise _invalid("not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise _invalid("must be a JSON object")
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    header = (content_type or "").split(";")[0].strip() or None
    if header in {"application/json", "application/octet-stream"}:
        header = None
    media_type = declared or header
    if declared and header and declared != header:
        raise _invalid(f"mediaType {declared!r} does not match Content-Type {header!r}")
    if media_type is None:
        # An OCI manifest may omit mediaType; the shape tells which one it is.
        media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if media_type in SCHEMA1 or document.get("schemaVersion") == 1:
        raise _invalid("Docker schema 1 manifests are not supported; push schema 2 or OCI")
    if media_type not in SUPPORTED:
        raise _invalid(f"unsupported manifest media type {media_type!r}")
    if document.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")

    subject = document.get("subject")
    subject_digest = _descriptor(subject, "subject")["digest"] if subject is not None else None
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not (isinstance(artifact_type, str) and is_media_type(artifact_type)):
        # The referrers API files manifests by it: a media type, at most 255 characters.
        raise _invalid(f"artifactType must be a media type (RFC 6838), not {artifact_type!r}")
    annotations = document.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise _invalid("annotations must be an object")

    if media_type in INDEX_TYPES:
        children = _descriptors(document, "manifests", required=True)
        return ParsedManifest(
            media_type=media_type,
            config_digest=None,
            subject_digest=subject_digest,
            artifact_type=artifact_type,
            blobs=(),
            children=tuple(d["digest"] for d in children),
        )

    config = _descriptor(document.get("config"), "config")
    layers = _descriptors(document, "layers", required=True)
    if artifact_type is None and media_type == OCI_MANIFEST and subject_digest is not None:
        # The referrers API reports the config's media type for artifacts without artifactType.
        artifact_type = config.get("mediaType")
    if artifact_type is not None and not is_media_type(artifact_type):
        raise _invalid(f"config.mediaType {artifact_type!r} is not a media type (RFC 6838)")
    return ParsedManifest(
        media_type=media_type,
        config_digest=config["digest"],
        subject_digest=subject_digest,
        artifact_type=artifact_type,
        blobs=(config["digest"], *(d["digest"] for d in layers if _stored_in_registry(d))),
        children=(),
    )


def new_manifest(digest: str, payload: bytes, parsed: ParsedManifest) -> NewManifest:
    """What the metadata store records for a parsed manifest."""
    return NewManifest(
        digest=digest,
        media_type=parsed.media_type,
        payload=payload,
        config_digest=parsed.config_digest,
        subject_digest=parsed.subject_digest,
        artifact_type=parsed.artifact_type,
        blobs=parsed.blobs,
        children=parsed.children,
    )


def accepts(accept_headers: list[str], media_type: str) -> bool:
    """Whether a client's Accept headers admit ``media_type``; no Accept admits everything."""
    offered = [
        part.split(";")[0].strip() for header in accept_headers for part in header.split(",") if part.strip()
    ]
    if not offered:
        return True
    major = media_type.split("/")[0]
    return any(item in {media_type, "*/*", f"{major}/*"} for item in offered)
