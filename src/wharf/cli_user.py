"""`wharf user` and `wharf token`: accounts and personal access tokens from the command line,
on the registry's own database (as `wharf garbage-collect` opens it), as its local
administrator (``Caller.local(COMMAND_LINE)``).

Only click is imported here at the top: `wharf --help` stays fast; each command brings what it
needs when it runs."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from .config import Settings
    from .services.caller import Caller
    from .services.registry import Registry

T = TypeVar("T")
CONFIG = click.argument("config", required=False, type=click.Path(dir_okay=False))
PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (all of it, less one trailing newline) "
    "instead of asking for it twice on the terminal.",
)


def _open(config: str | None) -> Settings:
    """The settings of an existing registry, its database brought up to date (SQLite) or
    checked to be (PostgreSQL), as garbage-collect does."""
    from .cli import _prepare_database, _require_registry, _settings

    settings = _settings(config)
    _require_registry(settings, config)
    _prepare_database(settings)
    if settings.auth.method != "accounts":
        click.echo(
            "wharf: warning: auth.accounts.enabled is not true in this configuration: "
            "these accounts are used once it is",
            err=True,
        )
    return settings


def _run(settings: Settings, work: Callable[[Registry], Awaitable[T]]) -> T:
    """``work(registry)`` on the registry's services; a refusal of theirs ends the command
    with its one-line message."""
    import asyncio

    from .errors import RegistryError
    from .wiring import build_registry

    async def go() -> T:
        registry = build_registry(settings)
        try:
            return await work(registry)
        finally:
            await registry.close()

    try:
        return asyncio.run(go())
    except RegistryError as error:
        raise click.ClickException(error.message) from None


def _caller() -> Caller:
    from .services.caller import COMMAND_LINE, Caller

    return Caller.local(COMMAND_LINE)


def read_password(from_stdin: bool) -> str:
    """The new password: from standard input, or asked twice on the terminal. Refused (one
    line) when shorter than the minimum, or when the two entries differ."""
    import getpass

    from .services.passwords import PasswordTooShort, check_length

    if from_stdin:
        password = sys.stdin.read()
        password = password.removesuffix("\n").removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            raise click.ClickException(
                "no terminal to ask for the password on: give it on standard input with --password-stdin"
            )
        try:
            password = getpass.getpass("Password: ")
            try:
                check_length(password)
            except PasswordTooShort as error:
                raise click.ClickException(str(error)) from None
            again = getpass.getpass("Password again: ")
        except EOFError:
            raise click.ClickException("no password given") from None
        if again != password:
            raise click.ClickException("the two passwords differ; nothing was changed")
    try:
        check_length(password)
    except PasswordTooShort as error:
        raise click.ClickException(str(error)) from None
    return password


def _expiry(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    from .config import parse_duration

    if value is None:
        return None
    try:
        expires = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if expires.total_seconds() <= 0:
        raise click.BadParameter(f"{value!r}: a token must last longer than 0s")
    return expires


@click.group()
def user() -> None:
    """Wharf's own accounts (auth.accounts.enabled): users and their passwords."""


@user.command("add")
@click.argument("name")
@CONFIG
@click.option("--admin", is_flag=True, help="A system administrator (garbage collection, jobs, accounts).")
@PASSWORD_STDIN
def user_add(name: str, config: str | None, admin: bool, password_stdin: bool) -> None:
    """Create the user NAME, asking for their password.

    NAME is lowercase letters and digits, and after the first character also '-' and '_'.
    With no CONFIG: the registry `wharf serve` with no CONFIG keeps (./data).
    """
    from .errors import RegistryError
    from .services.accounts import check_name

    settings = _open(config)
    try:
        check_name(name, "user")  # said before a password is asked for
    except RegistryError as error:
        raise click.ClickException(error.message) from None
    password = read_password(password_stdin)

    async def work(registry: Registry) -> None:
        await registry.accounts.create(_caller(), "user", name, password, admin=admin)

    _run(settings, work)
    click.echo(f"created {'system administrator' if admin else 'user'} {name}", err=True)


@user.command("passwd")
@click.argument("name")
@CONFIG
@PASSWORD_STDIN
def user_passwd(name: str, config: str | None, password_stdin: bool) -> None:
    """Set the password of the user NAME (their old one is not needed here)."""
    settings = _open(config)

    async def exists(registry: Registry) -> None:
        found = await registry.accounts.get(_caller(), name)
        if found.kind != "user":
            raise click.ClickException(f"{name} is an organization, which has no password")

    _run(settings, exists)
    password = read_password(password_stdin)

    async def work(registry: Registry) -> None:
        await registry.accounts.set_password(_caller(), name, password)

    _run(settings, work)
    click.echo(f"changed the password of {name}", err=True)


@user.command("list")
@CONFIG
def user_list(config: str | None) -> None:
    """List the accounts: name, type (user or organization), active, admin."""
    from .meta.accounts import Account

    settings = _open(config)
    page = 500

    async def work(registry: Registry) -> list[Account]:
        found: list[Account] = []
        while True:
            batch = await registry.accounts.accounts(_caller(), len(found), page)
            found += batch
            if len(batch) < page:
                return found

    accounts = _run(settings, work)
    rows = [("NAME", "TYPE", "ACTIVE", "ADMIN")]
    rows += [(a.name, a.kind, _yes(a.active), _yes(a.admin)) for a in accounts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@click.group()
def token() -> None:
    """Personal access tokens: passwords for CI, one per use, each revocable."""


@token.command("create")
@CONFIG
@click.option("--user", "user_name", required=True, metavar="NAME", help="The user the token acts as.")
@click.option("--name", "label", required=True, metavar="LABEL", help='What it is for ("ci").')
@click.option(
    "--expires",
    callback=_expiry,
    metavar="DURATION",
    help="How long it works (30d, 12h); without it, until it is revoked.",
)
def token_create(config: str | None, user_name: str, label: str, expires: timedelta | None) -> None:
    """Create a personal access token for --user and print its secret, this once: it is kept
    only as a hash. Use it as the password (docker login, skopeo --creds, curl -u)."""
    from .meta.accounts import PersonalToken

    settings = _open(config)

    async def work(registry: Registry) -> tuple[PersonalToken, str]:
        return await registry.accounts.create_token(_caller(), user_name, label, expires)

    created, secret = _run(settings, work)
    until = f"until {created.expires_at:%Y-%m-%d %H:%M} UTC" if created.expires_at else "until revoked"
    click.echo(
        f"token {label!r} ({created.id}) for {user_name}, valid {until}; its secret is shown only now:",
        err=True,
    )
    click.echo(secret)
