"""An httpx ``Auth`` that answers Wharf's Bearer challenges as docker does: on a 401 it asks
the challenge's realm for a token with its Basic credentials, for every scope this
repository has needed so far (and pull on the repository a blob is mounted from), and
sends the request again with it. Tokens are kept per repository, so only a repository's
first request of each kind meets a challenge. Requests outside /v2 (the admin API) carry
the Basic credentials."""

from __future__ import annotations

import re
from collections.abc import Generator

import httpx

_REPOSITORY = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)/")
_PARAMETER = re.compile(r'(\w+)="([^"]*)"')


class TokenAuth(httpx.Auth):
    # Bodies are read before the first send, so a request can be sent again after its challenge.
    requires_request_body = True

    def __init__(self, username: str, password: str) -> None:
        self.basic = httpx.BasicAuth(username, password)
        self.tokens: dict[str, str] = {}
        self.scopes: dict[str, set[str]] = {}
        self.realm: tuple[str, str] | None = None  # (realm, service) of the last challenge

    def _token(self, key: str) -> Generator[httpx.Request, httpx.Response, None]:
        """Ask the realm for a token of every scope ``key`` has needed."""
        assert self.realm is not None
        realm, service = self.realm
        params = [("service", service), *(("scope", scope) for scope in sorted(self.scopes[key]))]
        answer = yield next(self.basic.auth_flow(httpx.Request("GET", realm, params=params)))
        answer.read()
        if answer.status_code == 200:
            self.tokens[key] = answer.json()["token"]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not request.url.path.startswith("/v2/"):
            yield from self.basic.auth_flow(request)
            return
        match = _REPOSITORY.match(request.url.path)
        key = match.group(1) if match else request.url.path
        scopes = self.scopes.setdefault(key, set())
        source = request.url.params.get("from")
        if source and f"repository:{source}:pull" not in scopes:
            scopes.add(f"repository:{source}:pull")
            self.tokens.pop(key, None)
            if self.realm is not None:
                yield from self._token(key)
        if key in self.tokens:
            request.headers["Authorization"] = f"Bearer {self.tokens[key]}"
        response = yield request
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code != 401 or not challenge.startswith("Bearer "):
            return
        asked = dict(_PARAMETER.findall(challenge))
        self.realm = asked["realm"], asked.get("service", "")
        scopes.update(asked.get("scope", "").split())
        yield from self._token(key)
        if key in self.tokens:
            request.headers["Authorization"] = f"Bearer {self.tokens[key]}"
            yield request
