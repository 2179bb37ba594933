"""Repositories as DTR's admin API shows them: listed, created, described, deleted, with their
tags and manifests.

Who may: anyone sees what they may pull (public repositories, anonymous clients included);
``admin`` on a namespace creates repositories in it; ``admin`` on a repository changes and
deletes it; ``read-write`` deletes its tags and manifests. A repository the caller may not
see is not there for them: 404, as for one that does not exist (an anonymous client is
asked for credentials instead, 401), so that names do not leak; a caller who sees it but
may not do what they asked is refused (403)."""

from __future__ import annotations

from ..errors import NAME_TAKEN, NAME_UNKNOWN, RegistryError
from ..meta.accounts import AccountStore, RepositoryInfo, Visibility
from ..meta.events import Event
from ..meta.manifests import ManifestInfo, ManifestRows, TagInfo
from ..reference import validate_name, validate_tag
from .access import ALL, DELETE, NEEDS, PULL, AccessService, Level, Refused, is_admin
from .accounts import check_text
from .caller import Caller
from .manifests import ManifestService

SHORT_LIMIT = 140  # the column's (DTR's short descriptions are one line)
LONG_LIMIT = 100_000


def unknown(name: str) -> RegistryError:
    return RegistryError(NAME_UNKNOWN, {"name": name}, f"repository name not known: {name}")


class RepositoryService:
    def __init__(
        self, accounts: AccountStore, rows: ManifestRows, manifests: ManifestService, access: AccessService
    ) -> None:
        self._accounts = accounts
        self._rows = rows
        self._manifests = manifests
        self._access = access

    async def require(self, caller: Caller, action: str, name: str) -> Level:
        """The caller's level on ``name``, when it allows ``action`` (pull, delete, ``*``);
        otherwise raise: not there (404) for a known caller who may not see it, ``Refused``
        for the rest."""
        validate_name(name)
        level = await self._access.level(caller, name)
        if level >= NEEDS[action]:
            return level
        if level < Level.READ and not caller.is_anonymous:
            raise unknown(name)
        await self._access.require(caller, action, name)  # raises: 401 anonymous, 403 known
        return level

    async def _found(self, name: str) -> RepositoryInfo:
        found = await self._accounts.repository(name)
        if found is None:
            raise unknown(name)
        return found

    async def visible(
        self, caller: Caller, namespace: str | None, start: int, limit: int
    ) -> list[RepositoryInfo]:
        """The repositories (of ``namespace`` when given) the caller may pull, by name."""
        if namespace is not None:
            validate_name(namespace)
        return await self._accounts.repositories(caller.user, is_admin(caller), namespace, start, limit)

    async def get(self, caller: Caller, name: str) -> RepositoryInfo:
        await self.require(caller, PULL, name)
        return await self._found(name)

    async def administered(self, caller: Caller, name: str) -> RepositoryInfo:
        """The repository, when the caller has ``admin`` on it."""
        await self.require(caller, ALL, name)
        return await self._found(name)

    async def create(
        self, caller: Caller, namespace: str, name: str, visibility: Visibility, short: str, long: str
    ) -> RepositoryInfo:
        """A repository of ``namespace``: theirs who have ``admin`` on the namespace (the user
        it is, the organization's owners, a team granted ``admin`` on it, an administrator)."""
        full = validate_name(f"{namespace}/{name}")
        if await self._access.namespace_level(caller, namespace) < Level.ADMIN:
            what = f"create repositories in {namespace}"
            if caller.is_anonymous:
                raise Refused(False, f"authentication required to {what}")
            raise Refused(True, f"{caller.name} may not {what}: that needs admin on the namespace")
        check_text(short, "shortDescription", SHORT_LIMIT)
        check_text(long, "longDescription", LONG_LIMIT)
        event = Event(caller.name, "repository.create", full, detail={"visibility": visibility})
        created = await self._accounts.create_repository(full, visibility, short, long, event)
        if created is None:
            raise RegistryError(NAME_TAKEN, {"name": full}, f"repository {full} exists already")
        return created

    async def update(
        self,
        caller: Caller,
        name: str,
        visibility: Visibility | None,
        short: str | None,
        long: str | None,
    ) -> RepositoryInfo:
        """Its visibility and descriptions (never its name): ``admin`` on it."""
        await self.require(caller, ALL, name)
        if short is not None:
            check_text(short, "shortDescription", SHORT_LIMIT)
        if long is not None:
            check_text(long, "longDescription", LONG_LIMIT)
        detail = {"visibility": visibility} if visibility is not None else None
        event = Event(caller.name, "repository.update", name, detail=detail)
        changed = await self._accounts.update_repository(name, event, visibility, short, long)
        if changed is None:
            raise unknown(name)
        return changed

    async def delete(self, caller: Caller, name: str) -> None:
        """Every manifest, tag and blob link of the repository, and its grants; ``admin`` on
        it. One that is not there is deleted already (DTR answers 204 then too)."""
        await self.require(caller, ALL, name)
        try:
            await self._manifests.delete_repository(caller, name)
        except RegistryError as error:
            if error.code is not NAME_UNKNOWN:
                raise

    async def tags(self, caller: Caller, name: str, start: int, limit: int) -> list[TagInfo]:
        await self.require(caller, PULL, name)
        found = await self._rows.tag_details(name, start, limit)
        if found is None:
            raise unknown(name)
        return found

    async def delete_tag(self, caller: Caller, name: str, tag: str) -> None:
        """The tag alone; its image stays (by digest, and under its other tags)."""
        await self.require(caller, DELETE, name)
        validate_tag(tag)
        await self._manifests.delete(caller, name, tag)

    async def manifests(self, caller: Caller, name: str, start: int, limit: int) -> list[ManifestInfo]:
        await self.require(caller, PULL, name)
        found = await self._rows.manifest_details(name, start, limit)
        if found is None:
            raise unknown(name)
        return found

    async def delete_manifest(self, caller: Caller, name: str, reference: str) -> None:
        """By digest: the image leaves the repository with every tag naming it. By tag: the
        tag alone. A soft delete: the bytes stay until garbage collection."""
        await self.require(caller, DELETE, name)
        await self._manifests.delete(caller, name, reference)
