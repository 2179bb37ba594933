"""Accounts, teams, access and personal access tokens on SQLAlchemy Core."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa

from .. import schema as s
from ..accounts import (
    OWNERS,
    AccessFacts,
    Account,
    Kind,
    NameTaken,
    PersonalToken,
    RepositoryInfo,
    Team,
    TeamGrant,
    Visibility,
)
from ..clock import aware as _aware
from ..clock import now as _now
from ..events import Event
from .base import SQL
from .events import record

_a, _t, _tm = s.accounts, s.teams, s.team_members
_r, _rta, _nta, _tok = s.repositories, s.repository_team_access, s.namespace_team_access, s.access_tokens
SIGNING_KEY = "auth.signing_key"


def _account(row: Any) -> Account:
    return Account(row.id, row.name, cast(Kind, row.kind), row.active, row.admin, row.password_hash)


def _team(row: Any) -> Team:
    return Team(row.id, row.org_id, row.org, row.name, row.description)


def _repository(row: Any) -> RepositoryInfo:
    return RepositoryInfo(
        row.id, row.name, cast(Visibility, row.visibility), row.short_description, row.long_description
    )


def _token(row: Any, user: str) -> PersonalToken:
    return PersonalToken(
        row.id,
        user,
        row.name,
        _aware(row.created_at),
        _aware(row.expires_at) if row.expires_at else None,
        _aware(row.last_used_at) if row.last_used_at else None,
    )


_TEAMS = sa.select(_t.c.id, _t.c.org_id, _a.c.name.label("org"), _t.c.name, _t.c.description).join(
    _a, _a.c.id == _t.c.org_id
)
_REPOSITORIES = sa.select(_r.c.id, _r.c.name, _r.c.visibility, _r.c.short_description, _r.c.long_description)


def _namespace_of(dialect: str, name: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """The part of a repository's name before its first slash ('' for a name without one,
    which is in no namespace: no account's name is empty)."""
    if dialect == "postgresql":
        slash = sa.func.strpos(name, "/")
        first = sa.func.split_part(name, "/", 1)
    else:
        slash = sa.func.instr(name, "/")
        first = sa.func.substr(name, 1, slash - 1)
    return sa.case((slash > 0, first), else_="")


def _user_teams(user: str) -> sa.Select[tuple[int]]:
    return sa.select(_tm.c.team_id).join(_a, _a.c.id == _tm.c.user_id).where(_a.c.name == user)


def _readable_by(dialect: str, user: str | None) -> sa.ColumnElement[bool]:
    """The repositories ``user`` may read, as a condition on ``repositories``: the one rule
    lists and the catalog share (``services/access.py`` applies the same rule to one
    repository from its facts)."""
    public = _r.c.visibility == "public"
    if user is None:
        return public
    namespace = _namespace_of(dialect, _r.c.name)
    teams = _user_teams(user)
    owners = (
        sa.select(_t.c.id)
        .join(_a, _a.c.id == _t.c.org_id)
        .where(_t.c.name == OWNERS, _a.c.name == namespace, _t.c.id.in_(teams))
    )
    by_namespace = sa.select(_nta.c.team_id).where(_nta.c.namespace == namespace, _nta.c.team_id.in_(teams))
    by_repository = sa.select(_rta.c.team_id).where(
        _rta.c.repository_id == _r.c.id, _rta.c.team_id.in_(teams)
    )
    return sa.or_(public, namespace == user, owners.exists(), by_namespace.exists(), by_repository.exists())


class SQLAccountStore:
    def __init__(self, sql: SQL) -> None:
        self._sql = sql
        self._db = sql.db

    # Accounts

    def _account_row(self, conn: sa.Connection, name: str) -> Account | None:
        row = conn.execute(sa.select(_a).where(_a.c.name == name)).first()
        return _account(row) if row else None

    async def create_account(
        self, name: str, kind: Kind, password_hash: str | None, active: bool, admin: bool, event: Event
    ) -> Account | None:
        def tx(conn: sa.Connection) -> Account | None:
            account_id = conn.scalar(
                self._sql.insert(_a)
                .values(
                    name=name,
                    kind=kind,
                    password_hash=password_hash,
                    active=active,
                    admin=admin,
                    created_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(_a.c.id)
            )
            if account_id is None:
                return None
            if kind == "organization":
                conn.execute(
                    _t.insert().values(org_id=account_id, name=OWNERS, description="", created_at=_now())
                )
            record(conn, event)
            return self._account_row(conn, name)

        return await self._db.write(tx)

    async def account(self, name: str) -> Account | None:
        return await self._db.read(lambda conn: self._account_row(conn, name))

    async def accounts(self, start: int, limit: int) -> list[Account]:
        query = sa.select(_a).order_by(self._sql.ordered(_a.c.name)).offset(start).limit(limit)
        return await self._db.read(lambda conn: [_account(row) for row in conn.execute(query)])

    async def update_account(
        self,
        name: str,
        event: Event,
        password_hash: str | None = None,
        active: bool | None = None,
        admin: bool | None = None,
    ) -> Account | None:
        changes: dict[str, Any] = {}
        if password_hash is not None:
            changes["password_hash"] = password_hash
        if active is not None:
            changes["active"] = active
        if admin is not None:
            changes["admin"] = admin

        def tx(conn: sa.Connection) -> Account | None:
            if changes:
                done = conn.execute(_a.update().where(_a.c.name == name).values(**changes))
                if done.rowcount:
                    record(conn, event)
            return self._account_row(conn, name)

        return await self._db.write(tx)

    async def delete_account(self, name: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            account_id = conn.scalar(sa.select(_a.c.id).where(_a.c.name == name))
            if account_id is None:
                return False
            # Its teams, their members and grants, its memberships and tokens cascade.
            conn.execute(_a.delete().where(_a.c.id == account_id))
            record(conn, event)
            return True

        return await self._db.write(tx)

    async def administrators(self) -> int:
        query = sa.select(sa.func.count()).where(_a.c.admin, _a.c.active, _a.c.kind == "user")
        return await self._db.read(lambda conn: int(conn.scalar(query) or 0))

    async def organizations_of(self, user: str) -> list[Account]:
        orgs = sa.select(_t.c.org_id).where(_t.c.id.in_(_user_teams(user)))
        query = sa.select(_a).where(_a.c.id.in_(orgs)).order_by(self._sql.ordered(_a.c.name))
        return await self._db.read(lambda conn: [_account(row) for row in conn.execute(query)])

    # Teams

    def _team_row(self, conn: sa.Connection, org: str, name: str) -> Team | None:
        row = conn.execute(_TEAMS.where(_a.c.name == org, _t.c.name == name)).first()
        return _team(row) if row else None

    async def teams(self, org: str) -> list[Team]:
        query = _TEAMS.where(_a.c.name == org).order_by(self._sql.ordered(_t.c.name))
        return await self._db.read(lambda conn: [_team(row) for row in conn.execute(query)])

    async def team(self, org: str, name: str) -> Team | None:
        return await self._db.read(lambda conn: self._team_row(conn, org, name))

    async def create_team(self, org: str, name: str, description: str, event: Event) -> Team | None:
        def tx(conn: sa.Connection) -> Team | None:
            org_id = conn.scalar(sa.select(_a.c.id).where(_a.c.name == org, _a.c.kind == "organization"))
            if org_id is None:
                return None
            created = conn.scalar(
                self._sql.insert(_t)
                .values(org_id=org_id, name=name, description=description, created_at=_now())
                .on_conflict_do_nothing(index_elements=["org_id", "name"])
                .returning(_t.c.id)
            )
            if created is None:
                return None
            record(conn, event)
            return self._team_row(conn, org, name)

        return await self._db.write(tx)

    async def update_team(
        self, org: str, name: str, event: Event, new_name: str | None = None, description: str | None = None
    ) -> Team | None:
        def tx(conn: sa.Connection) -> Team | None:
            team = self._team_row(conn, org, name)
            if team is None:
                return None
            changes: dict[str, Any] = {}
            if new_name is not None and new_name != name:
                if self._team_row(conn, org, new_name) is not None:
                    raise NameTaken(new_name)
                changes["name"] = new_name
            if description is not None:
                changes["description"] = description
            if changes:
                conn.execute(_t.update().where(_t.c.id == team.id).values(**changes))
                record(conn, event)
            return self._team_row(conn, org, changes.get("name", name))

        return await self._db.write(tx)

    async def delete_team(self, org: str, name: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            team = self._team_row(conn, org, name)
            if team is None:
                return False
            conn.execute(_t.delete().where(_t.c.id == team.id))  # members and grants cascade
            record(conn, event)
            return True

        return await self._db.write(tx)

    async def members(self, org: str, team: str) -> list[Account]:
        query = (
            sa.select(_a)
            .join(_tm, _tm.c.user_id == _a.c.id)
            .join(_t, _t.c.id == _tm.c.team_id)
            .where(
                _t.c.name == team, _t.c.org_id == sa.select(_a.c.id).where(_a.c.name == org).scalar_subquery()
            )
            .order_by(self._sql.ordered(_a.c.name))
        )
        return await self._db.read(lambda conn: [_account(row) for row in conn.execute(query)])

    async def is_member(self, org: str, team: str, user: str) -> bool:
        return user in {member.name for member in await self.members(org, team)}

    async def add_member(self, org: str, team: str, user: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            found = self._team_row(conn, org, team)
            user_id = conn.scalar(sa.select(_a.c.id).where(_a.c.name == user, _a.c.kind == "user"))
            if found is None or user_id is None:
                return False
            added = conn.execute(
                self._sql.insert(_tm)
                .values(team_id=found.id, user_id=user_id)
                .on_conflict_do_nothing(index_elements=["team_id", "user_id"])
            )
            if added.rowcount:
                record(conn, event)
            return True

        return await self._db.write(tx)

    async def remove_member(self, org: str, team: str, user: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            found = self._team_row(conn, org, team)
            if found is None:
                return False
            user_id = sa.select(_a.c.id).where(_a.c.name == user).scalar_subquery()
            done = conn.execute(_tm.delete().where(_tm.c.team_id == found.id, _tm.c.user_id == user_id))
            if done.rowcount:
                record(conn, event)
            return bool(done.rowcount)

        return await self._db.write(tx)

    # Access

    async def access_facts(self, user: str, repository: str, namespace: str | None) -> AccessFacts:
        teams = _user_teams(user)

        def tx(conn: sa.Connection) -> AccessFacts:
            row = conn.execute(_REPOSITORIES.where(_r.c.name == repository)).first()
            found = _repository(row) if row else None
            levels: list[str] = []
            owner = False
            if namespace is not None:
                owner = (
                    conn.scalar(
                        sa.select(_t.c.id)
                        .join(_a, _a.c.id == _t.c.org_id)
                        .where(_a.c.name == namespace, _t.c.name == OWNERS, _t.c.id.in_(teams))
                        .limit(1)
                    )
                    is not None
                )
                levels += conn.scalars(
                    sa.select(_nta.c.level).where(_nta.c.namespace == namespace, _nta.c.team_id.in_(teams))
                )
            if found is not None:
                levels += conn.scalars(
                    sa.select(_rta.c.level).where(_rta.c.repository_id == found.id, _rta.c.team_id.in_(teams))
                )
            return AccessFacts(found, owner, tuple(levels))

        return await self._db.read(tx)

    def _repository_row(self, conn: sa.Connection, name: str) -> RepositoryInfo | None:
        row = conn.execute(_REPOSITORIES.where(_r.c.name == name)).first()
        return _repository(row) if row else None

    async def repository(self, name: str) -> RepositoryInfo | None:
        return await self._db.read(lambda conn: self._repository_row(conn, name))

    async def create_repository(
        self, name: str, visibility: Visibility, short: str, long: str, event: Event
    ) -> RepositoryInfo | None:
        def tx(conn: sa.Connection) -> RepositoryInfo | None:
            created = conn.scalar(
                self._sql.insert(_r)
                .values(
                    name=name,
                    created_at=_now(),
                    visibility=visibility,
                    short_description=short,
                    long_description=long,
                )
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(_r.c.id)
            )
            if created is None:
                return None
            record(conn, event)
            return self._repository_row(conn, name)

        return await self._db.write(tx)

    async def update_repository(
        self,
        name: str,
        event: Event,
        visibility: Visibility | None = None,
        short: str | None = None,
        long: str | None = None,
    ) -> RepositoryInfo | None:
        changes: dict[str, Any] = {}
        if visibility is not None:
            changes["visibility"] = visibility
        if short is not None:
            changes["short_description"] = short
        if long is not None:
            changes["long_description"] = long

        def tx(conn: sa.Connection) -> RepositoryInfo | None:
            if changes:
                done = conn.execute(_r.update().where(_r.c.name == name).values(**changes))
                if done.rowcount:
                    record(conn, event)
            return self._repository_row(conn, name)

        return await self._db.write(tx)

    async def repositories(
        self, visible_to: str | None, everything: bool, namespace: str | None, start: int, limit: int
    ) -> list[RepositoryInfo]:
        query = _REPOSITORIES.order_by(self._sql.ordered(_r.c.name)).offset(start).limit(limit)
        if not everything:
            query = query.where(_readable_by(self._sql.dialect, visible_to))
        if namespace is not None:
            query = query.where(_namespace_of(self._sql.dialect, _r.c.name) == namespace)
        return await self._db.read(lambda conn: [_repository(row) for row in conn.execute(query)])

    async def readable(self, visible_to: str | None, names: Sequence[str]) -> set[str]:
        if not names:
            return set()
        query = sa.select(_r.c.name).where(
            _r.c.name.in_(list(names)), _readable_by(self._sql.dialect, visible_to)
        )
        return await self._db.read(lambda conn: set(conn.scalars(query)))

    def _grants(self, conn: sa.Connection, query: sa.Select[Any]) -> list[TeamGrant]:
        return [
            TeamGrant(
                Team(row.team_id, row.org_id, row.org, row.team, row.description), row.level, row.target
            )
            for row in conn.execute(query)
        ]

    def _grant_query(self, table: sa.Table, target: sa.ColumnElement[str]) -> sa.Select[Any]:
        query = (
            sa.select(
                _t.c.id.label("team_id"),
                _t.c.org_id,
                _a.c.name.label("org"),
                _t.c.name.label("team"),
                _t.c.description,
                table.c.level,
                target.label("target"),
            )
            .select_from(table)
            .join(_t, _t.c.id == table.c.team_id)
            .join(_a, _a.c.id == _t.c.org_id)
        )
        if table is _rta:
            query = query.join(_r, _r.c.id == _rta.c.repository_id)
        return query

    async def repository_grants(self, repository: str) -> list[TeamGrant]:
        query = self._grant_query(_rta, _r.c.name).where(_r.c.name == repository).order_by(_t.c.name)
        return await self._db.read(lambda conn: self._grants(conn, query))

    async def namespace_grants(self, namespace: str) -> list[TeamGrant]:
        query = (
            self._grant_query(_nta, _nta.c.namespace).where(_nta.c.namespace == namespace).order_by(_t.c.name)
        )
        return await self._db.read(lambda conn: self._grants(conn, query))

    async def team_grants(self, org: str, team: str) -> list[TeamGrant]:
        def tx(conn: sa.Connection) -> list[TeamGrant]:
            found = self._team_row(conn, org, team)
            if found is None:
                return []
            repositories = self._grant_query(_rta, _r.c.name).where(_t.c.id == found.id).order_by(_r.c.name)
            namespaces = (
                self._grant_query(_nta, _nta.c.namespace)
                .where(_t.c.id == found.id)
                .order_by(_nta.c.namespace)
            )
            return self._grants(conn, repositories) + self._grants(conn, namespaces)

        return await self._db.read(tx)

    def _upsert_level(self, conn: sa.Connection, table: sa.Table, keys: dict[str, Any], level: str) -> None:
        statement = self._sql.insert(table).values(**keys, level=level)
        conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_={"level": level}))

    async def grant_repository(self, repository: str, org: str, team: str, level: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            found = self._team_row(conn, org, team)
            repo_id = self._sql.repository_id(conn, repository)
            if found is None or repo_id is None:
                return False
            self._upsert_level(conn, _rta, {"repository_id": repo_id, "team_id": found.id}, level)
            record(conn, event)
            return True

        return await self._db.write(tx)

    async def revoke_repository(self, repository: str, org: str, team: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            found = self._team_row(conn, org, team)
            repo_id = self._sql.repository_id(conn, repository)
            if found is None or repo_id is None:
                return False
            done = conn.execute(
                _rta.delete().where(_rta.c.repository_id == repo_id, _rta.c.team_id == found.id)
            )
            if done.rowcount:
                record(conn, event)
            return bool(done.rowcount)

        return await self._db.write(tx)

    async def grant_namespace(self, namespace: str, org: str, team: str, level: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            found = self._team_row(conn, org, team)
            if found is None:
                return False
            self._upsert_level(conn, _nta, {"namespace": namespace, "team_id": found.id}, level)
            record(conn, event)
            return True

        return await self._db.write(tx)

    async def revoke_namespace(self, namespace: str, org: str, team: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            found = self._team_row(conn, org, team)
            if found is None:
                return False
            done = conn.execute(
                _nta.delete().where(_nta.c.namespace == namespace, _nta.c.team_id == found.id)
            )
            if done.rowcount:
                record(conn, event)
            return bool(done.rowcount)

        return await self._db.write(tx)

    # Personal access tokens

    async def create_token(
        self, user: str, name: str, secret_hash: str, expires_at: datetime | None, event: Event
    ) -> PersonalToken | None:
        def tx(conn: sa.Connection) -> PersonalToken | None:
            user_id = conn.scalar(sa.select(_a.c.id).where(_a.c.name == user, _a.c.kind == "user"))
            if user_id is None:
                return None
            token_id = str(uuid.uuid4())
            conn.execute(
                _tok.insert().values(
                    id=token_id,
                    user_id=user_id,
                    name=name,
                    secret_hash=secret_hash,
                    created_at=_now(),
                    expires_at=expires_at,
                )
            )
            record(conn, Event(**{**event.__dict__, "reference": token_id}))
            row = conn.execute(sa.select(_tok).where(_tok.c.id == token_id)).one()
            return _token(row, user)

        return await self._db.write(tx)

    async def token_owner(self, secret_hash: str, now: datetime) -> tuple[PersonalToken, Account] | None:
        def tx(conn: sa.Connection) -> tuple[PersonalToken, Account] | None:
            row = conn.execute(sa.select(_tok).where(_tok.c.secret_hash == secret_hash)).first()
            if row is None or (row.expires_at is not None and _aware(row.expires_at) <= now):
                return None
            owner = conn.execute(sa.select(_a).where(_a.c.id == row.user_id)).first()
            if owner is None:
                return None
            conn.execute(_tok.update().where(_tok.c.id == row.id).values(last_used_at=now))
            return _token(row, owner.name), _account(owner)

        return await self._db.write(tx)

    async def tokens(self, user: str) -> list[PersonalToken]:
        query = (
            sa.select(_tok)
            .join(_a, _a.c.id == _tok.c.user_id)
            .where(_a.c.name == user)
            .order_by(_tok.c.created_at, _tok.c.id)
        )
        return await self._db.read(lambda conn: [_token(row, user) for row in conn.execute(query)])

    async def revoke_token(self, user: str, token_id: str, event: Event) -> bool:
        def tx(conn: sa.Connection) -> bool:
            owner = sa.select(_a.c.id).where(_a.c.name == user).scalar_subquery()
            done = conn.execute(_tok.delete().where(_tok.c.id == token_id, _tok.c.user_id == owner))
            if done.rowcount:
                record(conn, Event(**{**event.__dict__, "reference": token_id}))
            return bool(done.rowcount)

        return await self._db.write(tx)

    # The token server's signing key

    async def signing_key(self, generate: Callable[[], str]) -> str:
        st = s.settings
        query = sa.select(st.c.value).where(st.c.key == SIGNING_KEY)
        stored = await self._db.read(lambda conn: conn.scalar(query))
        if stored is not None:
            return str(stored["pem"])
        candidate = generate()

        def tx(conn: sa.Connection) -> str:
            conn.execute(
                self._sql.insert(st)
                .values(key=SIGNING_KEY, value={"pem": candidate}, updated_at=_now())
                .on_conflict_do_nothing(index_elements=["key"])
            )
            value = conn.scalar(query)
            assert value is not None  # inserted just now, or by another replica first
            return str(value["pem"])

        return await self._db.write(tx)
