"""The registry's services, built once from the stores and handed to the HTTP layers."""

from __future__ import annotations

from dataclasses import dataclass

from ..meta.store import MetadataStore
from ..storage.base import BlobStore
from .blobs import BlobService
from .gc import GarbageCollector
from .manifests import ManifestService
from .policy import Policy
from .uploads import UploadService


@dataclass
class Registry:
    meta: MetadataStore
    storage: BlobStore
    policy: Policy
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    gc: GarbageCollector

    @classmethod
    def build(cls, meta: MetadataStore, storage: BlobStore, policy: Policy) -> Registry:
        return cls(
            meta=meta,
            storage=storage,
            policy=policy,
            blobs=BlobService(meta.blobs, storage, policy),
            uploads=UploadService(meta, storage, policy),
            manifests=ManifestService(meta.manifests, policy),
            gc=GarbageCollector(meta, storage),
        )

    async def close(self) -> None:
        await self.meta.close()
