"""Helpers for tests of DTR's accounts, teams, repositories and team-access API on a real
server with Wharf's accounts on: who calls (HTTP Basic), and what a refusal must look like."""

from __future__ import annotations

from typing import Any

import httpx

from .accounts import add_user
from .server import WharfServer

ROOT = ("root", "root-password")  # the system administrator every such server has


def login(name: str) -> tuple[str, str]:
    """The Basic credentials of a user made by ``users``."""
    return (name, f"{name}-password")


def users(server: WharfServer, *names: str) -> None:
    """Users (active, not administrators) with the passwords ``login`` gives."""
    for name in names:
        add_user(server.database_url, name, login(name)[1])


def call(
    client: httpx.Client, method: str, path: str, who: tuple[str, str] | None = ROOT, body: Any = None
) -> httpx.Response:
    """``method`` on ``/api/v0<path>`` as ``who`` (None: anonymous)."""
    return client.request(method, f"/api/v0{path}", auth=who, json=body)


def expect(response: httpx.Response, status: int, code: str | None = None, says: str | None = None) -> Any:
    """Assert the answer's status (and its error code and message); the body, decoded."""
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    if status >= 400:
        (problem,) = response.json()["errors"]
        if code is not None:
            assert problem["code"] == code, problem
        if says is not None:
            assert says in problem["message"], problem
        if status == 401:
            assert response.headers["www-authenticate"] == 'Basic realm="wharf"'
        return problem
    return response.json() if response.content else None


def refused(client: httpx.Client, method: str, path: str, body: Any = None, **callers: Any) -> None:
    """The call is refused to each of ``callers`` (name=credentials or None) as they should be:
    401 anonymous, 403 to a known caller."""
    for who in callers.values():
        status = 401 if who is None else 403
        expect(call(client, method, path, who, body), status, "UNAUTHORIZED" if who is None else "DENIED")


def organization(
    client: httpx.Client, org: str, owners: tuple[str, ...] = (), **teams: tuple[str, ...]
) -> None:
    """An organization (made by the administrator) with its owners and teams of members."""
    expect(call(client, "POST", "/accounts", ROOT, {"type": "organization", "name": org}), 200)
    for owner in owners:
        expect(call(client, "PUT", f"/accounts/{org}/teams/owners/members/{owner}"), 200)
    for team, members in teams.items():
        expect(call(client, "POST", f"/accounts/{org}/teams", ROOT, {"name": team}), 201)
        for member in members:
            expect(call(client, "PUT", f"/accounts/{org}/teams/{team}/members/{member}"), 200)
