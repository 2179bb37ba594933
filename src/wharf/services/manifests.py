"""Manifest rules: push with every reference checked, pull with content negotiation, deletes,
tag listing, the catalog and referrers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..errors import (
    DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_TOO_BIG,
    MANIFEST_UNKNOWN,
    NAME_INVALID,
    NAME_UNKNOWN,
    TAG_INVALID,
    RegistryError,
)
from ..meta.events import Event
from ..meta.manifests import ManifestRows, MissingReference, StoredManifest
from ..reference import (
    TAG_RE,
    is_digest,
    is_media_type,
    is_valid_name,
    validate_digest,
    validate_name,
    validate_reference,
)
from .access import CATALOG, DELETE, PULL, PUSH, AccessService, Refused
from .caller import Caller
from .manifest_format import MAX_MANIFEST_BYTES, OCI_INDEX, accepts, new_manifest, parse_manifest
from .policy import Policy


@dataclass(frozen=True)
class PutResult:
    digest: str
    subject: str | None


@dataclass(frozen=True)
class Page:
    items: list[str]
    more: bool


def manifest_unknown(reference: str, message: str | None = None) -> RegistryError:
    return RegistryError(
        MANIFEST_UNKNOWN, {"reference": reference}, message or f"manifest unknown to registry: {reference}"
    )


def digest_of(payload: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, payload).hexdigest()}"


# How many repository names _catalog reads at a time when it keeps only the readable ones.
CATALOG_BATCH = 1000


class ManifestService:
    def __init__(self, rows: ManifestRows, policy: Policy, access: AccessService) -> None:
        self.rows = rows
        self.access = access
        self.policy = policy

    async def put(
        self,
        caller: Caller,
        repository: str,
        reference: str,
        payload: bytes,
        content_type: str | None,
    ) -> PutResult:
        validate_name(repository)
        validate_reference(reference)
        await self.access.require(caller, PUSH, repository)
        self.policy.check_writable()
        if len(payload) > MAX_MANIFEST_BYTES:
            raise RegistryError(
                MANIFEST_TOO_BIG,
                {"size": len(payload), "limit": MAX_MANIFEST_BYTES},
                f"manifest of {len(payload)} bytes exceeds the limit of {MAX_MANIFEST_BYTES} bytes",
            )
        parsed = parse_manifest(payload, content_type)
        if is_digest(reference):
            digest = digest_of(payload, reference.split(":", 1)[0])
            if digest != reference:
                raise RegistryError(
                    DIGEST_INVALID,
                    {"digest": reference, "actual": digest},
                    f"manifest digest {digest} does not match reference {reference}",
                )
            tag = None
        else:
            digest = digest_of(payload)
            tag = reference
        record = new_manifest(digest, payload, parsed)
        event = Event(
            caller.name, "manifest.push", repository, reference, digest, {"mediaType": parsed.media_type}
        )
        try:
            await self.rows.put(repository, record, tag, event)
        except MissingReference as missing:
            raise RegistryError(
                MANIFEST_BLOB_UNKNOWN,
                {"digest": missing.digest, "kind": missing.kind},
                f"manifest references {missing.kind} {missing.digest}, unknown to repository {repository}",
            ) from None
        return PutResult(digest, parsed.subject_digest)

    async def get(
        self, caller: Caller, repository: str, reference: str, accept: list[str] | None = None
    ) -> StoredManifest:
        validate_name(repository)
        await self.access.require(caller, PULL, repository)
        try:
            validate_reference(reference)
        except RegistryError:
            # A reference that can be neither a tag nor a digest names no manifest: 404, as
            # Distribution answers and the OCI conformance suite expects (a PUT still gets
            # TAG_INVALID or DIGEST_INVALID: there the client asks for it to be created).
            raise manifest_unknown(reference) from None
        manifest = await self.rows.get(repository, reference)
        if manifest is None:
            raise manifest_unknown(reference)
        if accept is not None and not accepts(accept, manifest.media_type):
            raise manifest_unknown(
                reference,
                f"manifest {reference} is {manifest.media_type}, which the Accept header does not admit",
            )
        return manifest

    async def delete(self, caller: Caller, repository: str, reference: str) -> None:
        """By digest: the image leaves the repository with its tags. By tag: the tag alone."""
        validate_name(repository)
        validate_reference(reference)
        await self.access.require(caller, DELETE, repository)
        self.policy.check_delete()
        if is_digest(reference):
            event = Event(caller.name, "manifest.delete", repository, reference, reference)
            if await self.rows.delete(repository, reference, event) is None:
                raise manifest_unknown(reference)
        else:
            event = Event(caller.name, "tag.delete", repository, reference)
            if not await self.rows.delete_tag(repository, reference, event):
                raise manifest_unknown(reference, f"tag unknown to repository {repository}: {reference}")

    async def delete_repository(self, caller: Caller, repository: str) -> None:
        """The whole repository: every manifest, tag and blob link (the bytes wait for GC)."""
        validate_name(repository)
        await self.access.require(caller, DELETE, repository)
        self.policy.check_delete()
        if not await self.rows.delete_repository(
            repository, Event(caller.name, "repository.delete", repository)
        ):
            raise RegistryError(
                NAME_UNKNOWN, {"name": repository}, f"repository name not known: {repository}"
            )

    async def tags(self, caller: Caller, repository: str, limit: int | None, last: str | None) -> Page:
        validate_name(repository)
        await self.access.require(caller, PULL, repository)
        if last and not TAG_RE.fullmatch(last):
            # Only a tag can come before the next page's first tag (and a NUL is no text to
            # compare with, on PostgreSQL).
            raise RegistryError(TAG_INVALID, {"last": last}, f"last must be a tag, not {last!r}")
        names = await self.rows.list_tags(repository, None if limit is None else limit + 1, last)
        if names is None:
            raise RegistryError(
                NAME_UNKNOWN, {"name": repository}, f"repository name not known: {repository}"
            )
        return _page(names, limit)

    async def catalog(self, caller: Caller, limit: int | None, last: str | None) -> Page:
        if last and not is_valid_name(last):
            raise RegistryError(NAME_INVALID, {"last": last}, f"last must be a repository name, not {last!r}")
        self._require_catalog(caller)
        if self.access.sees_everything(caller):
            names = await self.rows.list_repositories(None if limit is None else limit + 1, last)
            return _page(names, limit)
        # Only what the caller may pull, page by page: a batch of names, those readable
        # kept, until the page (and one more, to know another follows) is full.
        wanted = None if limit is None else limit + 1
        kept: list[str] = []
        after = last
        while wanted is None or len(kept) < wanted:
            batch = await self.rows.list_repositories(CATALOG_BATCH, after)
            kept += await self.access.readable(caller, batch)
            if len(batch) < CATALOG_BATCH:
                break
            after = batch[-1]
        return _page(kept if wanted is None else kept[:wanted], limit)

    @staticmethod
    def _require_catalog(caller: Caller) -> None:
        """A bearer token lists repositories only when it grants ``registry:catalog:*``."""
        scopes = caller.grant.scopes
        if scopes is not None and CATALOG not in scopes:
            raise Refused(False, "the token does not grant registry:catalog:*", ":".join(CATALOG))

    async def referrers(
        self, caller: Caller, repository: str, digest: str, artifact_type: str | None
    ) -> dict[str, Any]:
        """The referrers of ``digest`` as an OCI image index."""
        validate_name(repository)
        validate_digest(digest)
        await self.access.require(caller, PULL, repository)
        if artifact_type is not None and not is_media_type(artifact_type):
            # No manifest can have it (a push with such an artifactType is refused), so no
            # referrer matches: the filtered list is empty, and the database is not asked
            # (PostgreSQL cannot compare text holding a NUL).
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        descriptors = []
        for referrer in await self.rows.referrers(repository, digest, artifact_type):
            descriptor: dict[str, Any] = {
                "mediaType": referrer.media_type,
                "digest": referrer.digest,
                "size": referrer.size,
            }
            if referrer.artifact_type:
                descriptor["artifactType"] = referrer.artifact_type
            annotations = json.loads(referrer.payload).get("annotations")
            if annotations:
                descriptor["annotations"] = annotations
            descriptors.append(descriptor)
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}


def _page(items: list[str], limit: int | None) -> Page:
    if limit is not None and len(items) > limit:
        return Page(items[:limit], True)
    return Page(items, False)
