"""The registry's services, built once from the stores and handed to the HTTP layers (and
to the job worker: the schedules it fires are the ones the API edits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import parse_duration
from ..meta.store import MetadataStore
from ..storage.base import BlobStore
from .access import AccessService
from .accounts import AccountService
from .activity import ActivityLog
from .authn import Authenticator
from .blobs import BlobService
from .gc import GarbageCollector
from .gc_history import GCHistory
from .health import Health
from .job_parameters import JobDefaults
from .job_service import JobService
from .manifests import ManifestService
from .policy import Policy
from .repositories import RepositoryService
from .schedules import Periodic, ScheduleService
from .team_access import TeamAccessService
from .teams import TeamService
from .tokens import TokenServer
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
    gc_history: GCHistory
    activity: ActivityLog
    health: Health
    jobs: JobService
    schedules: ScheduleService
    access: AccessService
    auth: Authenticator
    accounts: AccountService
    teams: TeamService
    repositories: RepositoryService
    team_access: TeamAccessService
    # Wharf's token server (/auth/token), with its own accounts only.
    token_server: TokenServer | None = None

    @classmethod
    def build(
        cls,
        meta: MetadataStore,
        storage: BlobStore,
        policy: Policy,
        defaults: JobDefaults,
        periodic: Sequence[Periodic] = (),
        auth: Authenticator | None = None,
    ) -> Registry:
        """``defaults``: what jobs take from the configuration; ``periodic``: the jobs
        started at an interval (upload purging); ``auth``: how callers are told apart
        (default: they are not)."""
        access = AccessService(meta.accounts)
        auth = auth or Authenticator("none")
        manifests = ManifestService(meta.manifests, policy, access)
        repositories = RepositoryService(meta.accounts, meta.manifests, manifests, access)
        return cls(
            meta=meta,
            storage=storage,
            policy=policy,
            blobs=BlobService(meta.blobs, storage, policy, access),
            uploads=UploadService(meta, storage, policy, access),
            manifests=manifests,
            gc=GarbageCollector(meta, storage),
            gc_history=GCHistory(meta.gc, access),
            activity=ActivityLog(meta.events, access),
            health=Health(meta, storage),
            jobs=JobService(meta.jobs, defaults, access, meta.events),
            schedules=ScheduleService(
                meta.jobs, parse_duration(defaults.grace), periodic, access=access, events=meta.events
            ),
            access=access,
            auth=auth,
            # DTR lets anyone sign up, inactive until an administrator activates them:
            # with Wharf's own accounts only (htpasswd and token servers keep theirs).
            accounts=AccountService(meta.accounts, access, open_signup=auth.method == "accounts"),
            teams=TeamService(meta.accounts, access),
            repositories=repositories,
            team_access=TeamAccessService(meta.accounts, access, repositories),
        )

    async def close(self) -> None:
        await self.meta.close()
