"""Building the stores and services from the settings, for every entry point (the ASGI app
and the CLI commands); nothing here imports the web stack."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError, Settings, parse_duration
from .meta.sql import SQLMetadataStore
from .services.authn import AccountsBasic, Authenticator, basic_challenge, bearer_challenge
from .services.job_parameters import PURGE_UPLOADS, JobDefaults
from .services.policy import Policy
from .services.registry import Registry
from .services.schedules import Periodic
from .services.tokens import SigningKeyError, Tokens, TokenServer, load_signing_key
from .storage.base import BlobStore
from .storage.filesystem import FilesystemBlobStore

if TYPE_CHECKING:
    from .services.jobs import JobRunner
    from .services.maintenance import MaintenanceWatcher
    from .services.token_trust import TrustedKeys


def build_storage(settings: Settings) -> BlobStore:
    s3 = settings.storage.s3
    if s3 is None:
        return FilesystemBlobStore(settings.storage.filesystem.rootdirectory, fsync=settings.storage.fsync)
    from .storage.s3 import S3BlobStore

    return S3BlobStore(
        s3.bucket,
        region=s3.region,
        endpoint=s3.regionendpoint or None,
        access_key=s3.accesskey or None,
        secret_key=s3.secretkey or None,
        root=s3.rootdirectory,
        path_style=s3.forcepathstyle,
        verify=not s3.skipverify,
        spool_directory=s3.spooldirectory or None,
    )


def require_database_url(settings: Settings) -> None:
    """S3 storage needs database.url: the default SQLite database lives in the local storage
    root (./data under each process's working directory), so two replicas on one bucket
    would each keep a registry of their own and never see each other's pushes."""
    if settings.storage.s3 is not None and not settings.database.url:
        raise ConfigError(
            "storage.s3 is set but database.url is not: set database.url (or WHARF_DATABASE_URL) to "
            "the PostgreSQL database every replica shares, e.g. postgresql://wharf@db.example/wharf; "
            "Wharf keeps no SQLite database beside S3 storage"
        )


def prepare_storage(settings: Settings) -> None:
    """Before serving: the directories writes go through on this machine exist and can be
    written, created when missing, refused (naming the key) when they cannot be. A missing
    spool directory used to fail every chunked PATCH with a 500 while /readyz said ready."""
    s3 = settings.storage.s3
    if s3 is not None and s3.spooldirectory:
        _writable_directory(Path(s3.spooldirectory), "storage.s3.spooldirectory")


def _writable_directory(path: Path, key: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{key}: cannot create {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {path} is not writable")


def build_registry(settings: Settings) -> Registry:
    storage = build_storage(settings)
    meta = SQLMetadataStore(settings.database_url, durable=settings.storage.fsync)
    policy = Policy(
        delete_enabled=settings.storage.delete.enabled,
        readonly=settings.storage.maintenance.readonly.enabled,
        redirect=not settings.storage.redirect.disable,
        max_open_uploads=settings.uploads.maxopen,
    )
    purging = settings.storage.maintenance.uploadpurging
    defaults = JobDefaults(grace=settings.gc.grace, purge_age=purging.age, purge_dry_run=purging.dryrun)
    periodic = []
    if purging.enabled:
        # Like Distribution's uploadpurging: every interval, here once across replicas.
        parameters = {"age": purging.age, "dryRun": purging.dryrun}
        periodic.append(
            Periodic("uploadPurging", PURGE_UPLOADS, parse_duration(purging.interval), parameters)
        )
    auth = settings.auth
    if auth.method != "accounts":
        return Registry.build(meta, storage, policy, defaults, periodic, build_authenticator(settings))
    accounts = auth.accounts
    tokens = Tokens(
        meta.accounts,
        service=accounts.service,
        issuer=accounts.issuer,
        ttl=accounts.token_ttl,
        pem=read_signing_key(settings),
    )
    basic = AccountsBasic(meta.accounts)
    # Bearer tokens from /auth/token, and HTTP Basic straight to /v2 and /api/v0 too (as
    # DTR's documents use curl -u).
    authenticator = Authenticator(
        "accounts",
        basic=basic,
        bearer=tokens,
        challenge=bearer_challenge(accounts.realm or token_realm(settings), accounts.service),
    )
    registry = Registry.build(meta, storage, policy, defaults, periodic, authenticator)
    registry.token_server = TokenServer(tokens, registry.access, basic, authenticator.limiter)
    return registry


def token_realm(settings: Settings) -> str:
    """Where the challenge sends clients for tokens when auth.accounts.realm is empty: http.host's
    /auth/token, or (empty) the request's own host."""
    return f"{settings.http.host}/auth/token" if settings.http.host else ""


def read_signing_key(settings: Settings) -> str | None:
    """The PEM of auth.accounts.signingkey (None when unset: the key kept in the database);
    ``ConfigError`` naming the key for a file that cannot be read or cannot sign."""
    path = settings.auth.accounts.signingkey
    if not path:
        return None
    try:
        pem = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not a text file"
        raise ConfigError(f"auth.accounts.signingkey: cannot read {path}: {reason}") from None
    try:
        load_signing_key(pem, f"auth.accounts.signingkey ({path})")
    except SigningKeyError as error:
        raise ConfigError(str(error)) from None
    return pem


def build_authenticator(settings: Settings) -> Authenticator:
    """How this process tells callers apart, for the methods other than Wharf's accounts."""
    auth = settings.auth
    if auth.method == "htpasswd":
        from .services.htpasswd import HtpasswdBasic

        assert auth.htpasswd is not None
        realm = auth.htpasswd.realm
        # Read on the first request (and again whenever it changes): `wharf serve` has read
        # it once before starting (check_auth), and the command line does not need it.
        return Authenticator(
            "htpasswd",
            basic=HtpasswdBasic(auth.htpasswd.path),
            challenge=basic_challenge(realm),
            realm=realm,
            anonymous=False,
        )
    if auth.method == "token":
        from .services.token_trust import TrustedTokens

        assert auth.token is not None
        token = auth.token
        # Checked by check_auth before serving; read again here (the command line does not
        # reach this).
        trusted = TrustedTokens(trusted_keys(settings), issuer=token.issuer, service=token.service)
        return Authenticator("token", bearer=trusted, challenge=bearer_challenge(token.realm, token.service))
    return Authenticator("none", open_to_all=auth.open)


def trusted_keys(settings: Settings) -> TrustedKeys:
    """The keys of auth.token's token server; ``ConfigError`` naming the key and the file."""
    from .services.token_trust import TrustedKeys, TrustError

    token = settings.auth.token
    assert token is not None
    try:
        return TrustedKeys.load(token.rootcertbundle, token.jwks)
    except TrustError as error:
        raise ConfigError(str(error)) from None


def check_auth(settings: Settings) -> None:
    """Before serving: what the ``auth`` section names can be used (an htpasswd file is read
    and every line checked), else ``ConfigError`` naming the key."""
    auth = settings.auth
    if auth.method == "accounts":
        read_signing_key(settings)
    if auth.method == "token":
        trusted_keys(settings)
    if auth.method == "htpasswd":
        from .services.htpasswd import HtpasswdBasic, HtpasswdError

        assert auth.htpasswd is not None
        try:
            HtpasswdBasic(auth.htpasswd.path).load()
        except HtpasswdError as error:
            raise ConfigError(str(error)) from None


def build_watcher(settings: Settings, registry: Registry) -> MaintenanceWatcher:
    """This process's follower of read-only maintenance, reading the mark every jobs.poll."""
    from .services.maintenance import MaintenanceWatcher

    poll = parse_duration(settings.jobs.poll).total_seconds()
    return MaintenanceWatcher(registry.meta.jobs, registry.policy, poll)


def build_runner(settings: Settings, registry: Registry) -> JobRunner:
    """The job worker: every action Wharf knows, with the configured timing."""
    # Imported here: the jobs module brings prometheus_client (16 ms), which the command
    # line's garbage collection has no use for.
    from .services.fsck import Checker
    from .services.fsck_job import fsck_action
    from .services.job_parameters import FSCK, METADATA_MIGRATION, PURGE_UPLOADS, REGISTRY_GC
    from .services.jobs import (
        Action,
        JobRunner,
        Timing,
        gc_action,
        migration_action,
        purge_action,
    )
    from .services.purge import UploadPurger

    jobs = settings.jobs
    timing = Timing(
        poll=parse_duration(jobs.poll).total_seconds(),
        heartbeat=parse_duration(jobs.heartbeat).total_seconds(),
        stale=parse_duration(jobs.stale).total_seconds(),
    )
    purging = settings.storage.maintenance.uploadpurging
    storage_root = None
    if settings.storage.s3 is None:
        storage_root = Path(settings.storage.filesystem.rootdirectory)
    actions: dict[str, Action] = {
        REGISTRY_GC: gc_action(registry.gc, timing.poll),
        PURGE_UPLOADS: purge_action(
            UploadPurger(registry.meta.blobs, registry.storage, registry.uploads), purging.age, purging.dryrun
        ),
        METADATA_MIGRATION: migration_action(registry.meta, storage_root),
        FSCK: fsck_action(Checker(registry.meta, registry.storage), settings.gc.grace_period, timing.poll),
    }
    return JobRunner(
        registry.meta.jobs, actions, timing, schedules=registry.schedules, policy=registry.policy
    )
