"""Who may do what: the one place that decides.

A caller's level on a repository comes from the facts the metadata store keeps (its
account, its teams, the repository's visibility); a bearer token's caller has exactly the
scopes of its token. The HTTP layers ask ``require`` / ``require_admin`` before a service
acts, and never decide themselves.

Levels, as DTR's: ``read-only`` pulls; ``read-write`` also pushes and deletes tags,
manifests and blobs; ``admin`` also changes the repository, grants teams access and deletes
it. A user has ``admin`` on their own namespace, an organization's owners on the
organization's; a system administrator on everything. Anyone (anonymous clients included)
may pull a public repository."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import IntEnum

from ..errors import DENIED, UNAUTHORIZED, RegistryError
from ..meta.accounts import LEVELS, AccessFacts, AccountStore
from .caller import Caller

# Docker's scope actions.
PULL, PUSH, DELETE, ALL = "pull", "push", "delete", "*"
CATALOG = ("registry", "catalog", ALL)


class Level(IntEnum):
    NONE = 0
    READ = 1  # read-only
    WRITE = 2  # read-write
    ADMIN = 3  # admin

    @classmethod
    def named(cls, name: str) -> Level:
        return cls(LEVELS.index(name) + 1)

    @property
    def label(self) -> str:
        return "none" if self is Level.NONE else LEVELS[self - 1]


# The level each action needs, and the actions each level allows.
NEEDS = {PULL: Level.READ, PUSH: Level.WRITE, DELETE: Level.WRITE, ALL: Level.ADMIN}


def actions_at(level: Level) -> set[str]:
    return {action for action, needed in NEEDS.items() if level >= needed}


def namespace_of(repository: str) -> str | None:
    """The namespace a repository is in: its name's first component (None for a name of
    one component, which is in no namespace)."""
    head, slash, _rest = repository.partition("/")
    return head if slash else None


def level_from(facts: AccessFacts, user: str | None, admin: bool, repository: str) -> Level:
    """The level the facts give ``user`` (None: anonymous) on ``repository``: pure, the rule
    itself."""
    if admin:
        return Level.ADMIN
    level = Level.NONE
    if facts.repository is not None and facts.repository.visibility == "public":
        level = Level.READ
    if user is None:
        return level
    namespace = namespace_of(repository)
    if namespace is not None and (namespace == user or facts.namespace_owner):
        return Level.ADMIN
    return max([level, *(Level.named(name) for name in facts.levels)])


def scope_actions(action: str) -> str:
    """The actions a challenge asks a token for, to do ``action``: a push also pulls (it
    checks for blobs and mounts), as docker and podman ask."""
    return "pull,push" if action == PUSH else action


class Refused(RegistryError):
    """A request the caller may not make. UNAUTHORIZED (401) when credentials would help
    (none came, or a token that lacks the scope); ``scope`` is what a challenge asks for."""

    def __init__(self, known: bool, message: str, scope: str | None = None) -> None:
        code = DENIED if known else UNAUTHORIZED
        detail = None
        if scope is not None:  # Distribution's detail: one entry per action asked for
            kind, rest = scope.split(":", 1)
            name, actions = rest.rsplit(":", 1)
            detail = [{"Type": kind, "Name": name, "Action": action} for action in actions.split(",")]
        super().__init__(code, detail, message)
        self.scope = scope


def is_admin(caller: Caller) -> bool:
    """Whether the caller may do everything: a system administrator, or a caller granted
    everything (no authentication configured, the command line)."""
    return caller.grant.unrestricted or caller.admin


class AccessService:
    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts

    def sees_everything(self, caller: Caller) -> bool:
        """Whether every repository is the caller's to read, without asking the store."""
        return is_admin(caller)

    async def level(self, caller: Caller, repository: str) -> Level:
        """The caller's level on the repository (which need not exist yet)."""
        grant = caller.grant
        if grant.unrestricted:
            return Level.ADMIN
        if grant.scopes is not None:
            granted = {
                action for kind, name, action in grant.scopes if kind == "repository" and name == repository
            }
            levels = [NEEDS[action] for action in granted if action in NEEDS]
            return max(levels, default=Level.NONE)
        if caller.admin:
            return Level.ADMIN
        facts = await self._facts(caller.user, repository)
        return level_from(facts, caller.user, caller.admin, repository)

    async def namespace_level(self, caller: Caller, namespace: str) -> Level:
        """The caller's level on a repository of ``namespace`` that does not exist yet: what
        the namespace itself gives (their own, an organization's owners, a team's access to
        the namespace). Asked of a name no repository can have (it ends with a slash)."""
        return await self.level(caller, f"{namespace}/")

    async def _facts(self, user: str | None, repository: str) -> AccessFacts:
        if user is None:
            found = await self._accounts.repository(repository)
            return AccessFacts(found, False, ())
        return await self._accounts.access_facts(user, repository, namespace_of(repository))

    async def allows(self, caller: Caller, action: str, repository: str) -> bool:
        grant = caller.grant
        if grant.scopes is not None and not grant.unrestricted:
            # A token allows the actions it names (``*``: all of them), each on its own.
            named = {a for kind, name, a in grant.scopes if kind == "repository" and name == repository}
            return action in named or ALL in named
        return await self.level(caller, repository) >= NEEDS[action]

    async def require(self, caller: Caller, action: str, repository: str) -> None:
        """Raise ``Refused`` unless the caller may do ``action`` (pull, push, delete, or ``*``:
        administer) on the repository."""
        if await self.allows(caller, action, repository):
            return
        scope = f"repository:{repository}:{scope_actions(action)}"
        what = {PULL: "pull from", PUSH: "push to", DELETE: "delete from", ALL: "administer"}[action]
        if caller.is_anonymous:
            raise Refused(False, f"authentication required to {what} {repository}", scope)
        if caller.grant.scopes is not None:
            # A token narrower than the account: a new token may carry the action (docker
            # asks for one when challenged); when the account may not either, say so. A
            # trusted token server's accounts are its own: only it can say.
            found = await self._accounts.account(caller.user or "")
            account = Caller.account(caller.user or "", found is not None and found.admin)
            if caller.grant.external or await self.allows(account, action, repository):
                raise Refused(False, f"the token does not grant {action} on {repository}", scope)
        raise Refused(True, f"{caller.name} may not {what} {repository}", scope)

    def require_admin(self, caller: Caller, what: str) -> None:
        """Raise ``Refused`` unless the caller is a system administrator; ``what`` names the
        request in the message ("start jobs")."""
        if caller.grant.unrestricted or caller.admin:
            return
        if caller.is_anonymous:
            raise Refused(False, f"authentication required to {what}")
        raise Refused(True, f"only a system administrator may {what}; {caller.name} is not one")

    def require_user(self, caller: Caller, what: str) -> None:
        """Raise ``Refused`` unless someone signed in (or the registry is open)."""
        if caller.is_anonymous and not caller.grant.unrestricted:
            raise Refused(False, f"authentication required to {what}")

    async def granted(self, caller: Caller, repository: str, asked: Iterable[str]) -> list[str]:
        """Of the ``asked`` actions on ``repository``, those the caller may do: what a token
        server puts in a token (a partial grant is not an error)."""
        level = await self.level(caller, repository)
        allowed = actions_at(level)
        wanted = list(dict.fromkeys(asked))
        if ALL in wanted and level < NEEDS[ALL]:
            # ``*`` asks for every action (containers/image deletes with it): as many of
            # them as the caller may do.
            wanted = [PULL, PUSH, DELETE, *wanted]
        return [action for action in dict.fromkeys(wanted) if action in allowed]

    async def readable(self, caller: Caller, names: Sequence[str]) -> list[str]:
        """Those of ``names`` (existing repositories, in order) the caller may pull."""
        grant = caller.grant
        if grant.unrestricted or caller.admin:
            return list(names)
        if grant.external and grant.scopes is not None and CATALOG in grant.scopes:
            return list(names)  # the trusted token server decided alone
        if grant.scopes is not None and caller.user is not None:
            # A catalog token lists what its subject may read, as an account's caller does.
            account = await self._accounts.account(caller.user)
            if account is not None and account.admin:
                return list(names)
        keep = await self._accounts.readable(caller.user, names)
        return [name for name in names if name in keep]
