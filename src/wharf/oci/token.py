"""``/auth/token``: Docker's token endpoint (``GET``, HTTP Basic or anonymous) and its OAuth2
form (``POST``, the ``password`` and ``refresh_token`` grants). Parsing and formatting only:
``services/tokens.py`` decides what a token grants."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..errors import TOKEN_REQUEST_INVALID, RegistryError
from ..faults import answer_for
from ..services.access import Refused
from ..services.authn import Login, parse_authorization
from ..services.caller import Caller
from ..services.tokens import Issued, TokenServer, parse_scopes
from .responses import empty, error_response, json_response

log = logging.getLogger(__name__)
# A token request's form is a few hundred bytes; past this it is not one.
MAX_FORM = 64 * 1024


def _server(request: Request) -> TokenServer | None:
    server: TokenServer | None = request.app.state.registry.token_server
    return server


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


def _answer(issued: Issued, refresh: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
        "scope": issued.scope,
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    return body


def _invalid(message: str, detail: Any = None) -> RegistryError:
    return RegistryError(TOKEN_REQUEST_INVALID, detail, message)


def _refused(request: Request, error: RegistryError) -> Response:
    if error.status == 401:
        error.headers["WWW-Authenticate"] = request.app.state.registry.auth.basic_challenge
    return error_response(error)


async def token_get(request: Request) -> Response:
    """Docker's token request: ``service``, ``scope`` (any number), ``account``,
    ``offline_token``; credentials by HTTP Basic, or none for an anonymous token."""
    server = _server(request)
    if server is None:
        return empty(404)
    try:
        params = request.query_params
        server.check_service(params.get("service"))
        scopes = parse_scopes(params.getlist("scope"))
        credentials = parse_authorization(request.headers.get("authorization"))
        login: Login | None = None
        if credentials is not None:
            if credentials.scheme != "basic":
                raise Refused(False, "the token endpoint takes HTTP Basic credentials, or none")
            account = params.get("account")
            if account and account != credentials.user:
                raise _invalid(
                    f"account {account!r} is not the user of the credentials ({credentials.user!r})",
                    {"account": account},
                )
            login = await server.login(credentials.user, credentials.secret, _peer(request))
        caller = login.caller if login is not None else Caller.anonymous()
        issued = await server.issue(caller, scopes)
        offline = params.get("offline_token", "").lower() == "true"
        refresh = await server.refresh_token(login) if offline and login is not None else None
        return json_response(_answer(issued, refresh))
    except RegistryError as error:
        return _refused(request, error)
    except Exception as error:
        return error_response(answer_for(log, request.method, request.url.path, error))


def _oauth_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> Response:
    """RFC 6749's error answer."""
    response = json_response({"error": error, "error_description": description}, extra=headers)
    response.status_code = status
    return response


async def _form(request: Request) -> dict[str, list[str]]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise _invalid(f"the form is larger than {MAX_FORM} bytes")
    try:
        return parse_qs(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise _invalid("the body is not an application/x-www-form-urlencoded form") from None


async def token_post(request: Request) -> Response:
    """OAuth2's token request: ``grant_type`` ``password`` (``username``, ``password``) or
    ``refresh_token`` (``refresh_token``), with ``service``, ``scope`` (scopes separated by
    spaces), ``client_id`` and ``access_type=offline`` (then a refresh token too)."""
    server = _server(request)
    if server is None:
        return empty(404)
    try:
        fields = await _form(request)
        # Each field once, but scope as often as it comes (containers/image sends one
        # field per scope).
        form = {name: values[0] for name, values in fields.items()}
        server.check_service(form.get("service"))
        scopes = parse_scopes(fields.get("scope", []))
        grant = form.get("grant_type", "")
        refresh: str | None = None
        if grant == "password":
            user, password = form.get("username", ""), form.get("password", "")
            if not user:
                raise _invalid("the password grant needs username and password", {"username": user})
            login = await server.login(user, password, _peer(request))
            if form.get("access_type") == "offline":
                refresh = await server.refresh_token(login)
        elif grant == "refresh_token":
            login = await server.refreshed(form.get("refresh_token", ""))
            refresh = await server.refresh_token(login) if form.get("access_type") == "offline" else None
        else:
            return _oauth_error(
                400,
                "unsupported_grant_type",
                f"grant_type {grant!r} is not supported: use password or refresh_token",
            )
        issued = await server.issue(login.caller, scopes)
        return json_response(_answer(issued, refresh))
    except ClientDisconnect:
        return empty(400)
    except Refused as error:
        # RFC 6749: credentials or a refresh token that prove nothing are an invalid grant.
        return _oauth_error(400, "invalid_grant", error.message)
    except RegistryError as error:
        return _oauth_error(error.status, "invalid_request", error.message, error.headers)
    except Exception as error:
        return error_response(answer_for(log, request.method, request.url.path, error))
