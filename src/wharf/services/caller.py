"""Who calls a service, and what they were granted.

Every service method an entry point reaches takes a caller, as its first argument and with
no default: the HTTP layers build theirs in one place each (``oci/router.py`` for /v2,
``api/deps.py`` for /api/v0), the command line names its local administrator. Wharf has no
accounts yet, so every caller is granted everything; the access service to come reads the
grant, and the HTTP layers fill it from credentials."""

from __future__ import annotations

from dataclasses import dataclass

# How the activity log names a caller who gave no name.
ANONYMOUS = "anonymous"
# The caller of `wharf garbage-collect`, `wharf fsck` and `wharf import-distribution`:
# whoever runs them on a machine holding the registry's database and storage.
COMMAND_LINE = "cli"
# The caller of what the job worker runs: the registry itself, on behalf of whoever started
# the job (a job does not record who that was yet).
JOB_WORKER = "job-worker"


@dataclass(frozen=True)
class Grant:
    """What a caller may do. ``unrestricted``: everything, on every repository; what every
    caller is granted until Wharf has accounts."""

    unrestricted: bool = False


UNRESTRICTED = Grant(unrestricted=True)


@dataclass(frozen=True)
class Caller:
    user: str | None  # None: anonymous
    grant: Grant

    @property
    def name(self) -> str:
        """Who, as the activity log records them."""
        return ANONYMOUS if self.user is None else self.user

    @property
    def is_anonymous(self) -> bool:
        return self.user is None

    @classmethod
    def anonymous(cls, grant: Grant) -> Caller:
        """A client that sent no credentials, granted ``grant``."""
        return cls(None, grant)

    @classmethod
    def local(cls, name: str) -> Caller:
        """Wharf acting from this machine, with access to its database and storage (the
        command line, the job worker): granted everything, as such a process can do it all
        anyway."""
        return cls(name, UNRESTRICTED)
