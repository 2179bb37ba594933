"""The registry's services, built once from the stores and handed to the HTTP layers."""

from __future__ import annotations

from dataclasses import dataclass

from ..meta.store import MetadataStore
from ..storage.base import BlobStore
from .blobs import BlobService
from .gc import GarbageCollector
from .job_parameters import JobDefaults
from .job_service import JobService
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
    jobs: JobService

    @classmethod
    def build(
        cls, meta: MetadataStore, storage: BlobStore, policy: Policy, defaults: JobDefaults
    ) -> Registry:
        return cls(
            meta=meta,
            storage=storage,
            policy=policy,
            blobs=BlobService(meta, storage, policy),
            uploads=UploadService(meta, storage, policy),
            manifests=ManifestService(meta, policy),
            gc=GarbageCollector(meta, storage),
            jobs=JobService(meta, defaults),
        )

    async def close(self) -> None:
        await self.meta.close()
