"""Who calls a service, and what they were granted.

Every service method an entry point reaches takes a caller, as its first argument and with
no default: the HTTP layers build theirs in one place each (``oci/router.py`` for /v2,
``api/deps.py`` for /api/v0) from the credentials that came, the command line names its
local administrator. ``services/access.py`` decides from the grant what the caller may do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# How the activity log names a caller who gave no name.
ANONYMOUS = "anonymous"
# The caller of `wharf garbage-collect`, `wharf fsck` and `wharf import-distribution`:
# whoever runs them on a machine holding the registry's database and storage.
COMMAND_LINE = "cli"
# The caller of what the job worker runs: the registry itself, on behalf of whoever started
# the job (a job does not record who that was yet).
JOB_WORKER = "job-worker"


# A token's access entry: (resource type, resource name, action), as Docker's scopes write
# them: ("repository", "lib/app", "pull"), ("registry", "catalog", "*").
Scope = tuple[str, str, str]


@dataclass(frozen=True)
class Grant:
    """What a caller may do.

    - ``unrestricted``: everything, on every repository (no authentication configured, an
      htpasswd user, the command line, the job worker);
    - ``scopes`` given: exactly those (a bearer token's ``access`` claim, which its token
      server intersected with what the account may do when it issued it);
    - otherwise: what the metadata store says the caller's account may do (HTTP Basic, a
      personal access token); anonymous callers may pull public repositories."""

    unrestricted: bool = False
    scopes: frozenset[Scope] | None = None
    # The scopes came from a token server Wharf trusts (auth.token), which decided alone:
    # its registry:catalog:* lists every repository, as Distribution's does.
    external: bool = False


UNRESTRICTED = Grant(unrestricted=True)
ACCOUNT = Grant()


@dataclass(frozen=True)
class Caller:
    user: str | None  # None: anonymous
    grant: Grant
    admin: bool = False  # a system administrator (read with the account, or in the token)

    @property
    def name(self) -> str:
        """Who, as the activity log records them."""
        return ANONYMOUS if self.user is None else self.user

    @property
    def is_anonymous(self) -> bool:
        return self.user is None

    @classmethod
    def account(cls, user: str, admin: bool) -> Caller:
        """An account that proved who it is, with the rights the metadata store gives it."""
        return cls(user, ACCOUNT, admin)

    @classmethod
    def anonymous(cls, grant: Grant = ACCOUNT) -> Caller:
        """A client that sent no credentials, granted ``grant``."""
        return cls(None, grant)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], external: bool = False) -> Caller:
        """The caller a verified token's claims name (``sub``; empty: anonymous), granted
        exactly its ``access`` entries (``{"type", "name", "actions"}``)."""
        scopes: set[Scope] = set()
        for entry in claims.get("access") or []:
            if not isinstance(entry, dict):
                continue
            kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
            if isinstance(kind, str) and isinstance(name, str) and isinstance(actions, list):
                scopes.update((kind, name, action) for action in actions if isinstance(action, str))
        subject = claims.get("sub")
        user = subject if isinstance(subject, str) and subject else None
        return cls(user, Grant(scopes=frozenset(scopes), external=external))

    @classmethod
    def local(cls, name: str) -> Caller:
        """Wharf acting from this machine, with access to its database and storage (the
        command line, the job worker): granted everything, as such a process can do it all
        anyway."""
        return cls(name, UNRESTRICTED)
