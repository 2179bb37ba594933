"""Wharf's configuration: one YAML file with Distribution's key names, overridable from the environment.

Environment rule: ``WHARF_`` followed by the key's path in upper case, the parts joined
by ``_``. For example ``storage.filesystem.rootdirectory`` is
``WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY`` and ``http.addr`` is ``WHARF_HTTP_ADDR``.
Keys never contain an underscore, so the mapping is unambiguous. Values are parsed as YAML
scalars (``true``, ``4``, ``info``); a value YAML cannot read is taken as text. Errors name the
variable, as they name the key of a file.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .config_distribution import RULES, Namer, distribution_variables, sift
from .services import gc_defaults

ENV_PREFIX = "WHARF_"
CONFIG_VERSION = "0.1"
# Environment variables with the prefix that are not configuration keys.
RESERVED_ENV = {"WHARF_CONFIG"}
RESERVED_ENV_PREFIXES = ("WHARF_TEST_", "WHARF_BENCH_")


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


MAX_DURATION = timedelta(days=36525)  # later than that, dates overflow


def parse_duration(text: str) -> timedelta:
    """Durations as Distribution writes them: ``24h``, ``90m``, ``1h30m``, ``0s`` (also ``7d``
    and a bare ``0``)."""
    value = text.strip()
    if value == "0":
        return timedelta(0)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"{text!r} is not a duration (examples: 24h, 30m, 1h30m, 45s, 0s)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is too long a duration (at most 100 years)")
    return timedelta(seconds=seconds)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogConfig(Section):
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    formatter: Literal["text", "json"] = "text"
    # Distribution's: added to every log line (keys of a JSON line, key=value after a text one).
    fields: dict[str, str | int | float | bool] = {}

    @field_validator("level", "formatter", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        # Distribution reads `level: INFO` as info.
        return value.lower() if isinstance(value, str) else value


class TimeoutsConfig(Section):
    """Wharf's own (Distribution sets no timeout on its http.Server): how long a client may
    keep a connection without sending what it owes, so idle clients cannot hold them all."""

    # A request's line and headers must all arrive within this (granian allows 1ms..60s).
    header: str = "30s"
    # A request body may go this long without a byte arriving: 408, connection closed.
    idle: str = "60s"

    @field_validator("header", "idle")
    @classmethod
    def _positive_duration(cls, value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("must be longer than 0")
        return value

    @field_validator("header")
    @classmethod
    def _granian_range(cls, value: str) -> str:
        if parse_duration(value) > timedelta(seconds=60):
            raise ValueError("must be at most 60s")
        return value

    @property
    def header_seconds(self) -> float:
        return parse_duration(self.header).total_seconds()

    @property
    def idle_seconds(self) -> float:
        return parse_duration(self.idle).total_seconds()


class TLSConfig(Section):
    """Distribution's http.tls: HTTPS served by the HTTP server itself."""

    certificate: str  # PEM: the server's certificate, then any intermediates
    key: str  # PEM: its private key (PKCS#8, PKCS#1 or SEC1, unencrypted)
    # PEM files of the CAs whose client certificates are accepted; given: every client must
    # present one (mutual TLS).
    clientcas: list[str] = []
    # Distribution's: with clientcas, whether a client without a certificate is let in.
    clientauth: Literal["require-and-verify-client-cert", "verify-client-cert-if-given"] = (
        "require-and-verify-client-cert"
    )
    minimumtls: Literal["tls1.2", "tls1.3"] = "tls1.2"

    @field_validator("clientauth", mode="before")
    @classmethod
    def _verified(cls, value: Any) -> Any:
        if value in ("request-client-cert", "require-any-client-cert"):
            raise ValueError(
                f"{value} takes client certificates without verifying them, which Wharf does not do: "
                "use require-and-verify-client-cert or verify-client-cert-if-given"
            )
        return value

    @field_validator("certificate", "key")
    @classmethod
    def _names_a_file(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a PEM file")
        return value

    @field_validator("minimumtls", mode="before")
    @classmethod
    def _not_too_old(cls, value: Any) -> Any:
        if value in ("tls1.0", "tls1.1"):
            raise ValueError(f"{value} is not served (it is broken): use tls1.2 or tls1.3")
        return value


class HTTPConfig(Section):
    addr: str = "127.0.0.1:5000"
    workers: int = Field(default=1, ge=1, le=64)
    timeouts: TimeoutsConfig = TimeoutsConfig()
    # Per worker process. Connections beyond maxconnections wait in the listen backlog
    # (granian) or are answered 503 (uvicorn); requests beyond maxrequests are answered 503.
    maxconnections: int = Field(default=8192, ge=1, le=1_000_000)
    maxrequests: int = Field(default=4096, ge=1, le=1_000_000)
    # Distribution's: added to every response that does not set the header itself.
    headers: dict[str, list[str]] = {}
    tls: TLSConfig | None = None
    # Distribution's: the registry's external URL (https://registry.example.com); the token
    # challenge sends clients to <host>/auth/token when auth.accounts.realm is empty.
    host: str = ""

    @field_validator("host")
    @classmethod
    def _host_is_a_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if value and (not sep or scheme not in ("http", "https") or not rest.strip("/") or "?" in rest):
            raise ValueError(f"{value!r} is not the registry's URL (e.g. https://registry.example.com)")
        return value.rstrip("/")

    @field_validator("tls", mode="before")
    @classmethod
    def _empty_tls_is_plain(cls, value: Any) -> Any:
        # As in Distribution: a tls section naming no files (``tls: {}``) serves plain HTTP.
        if isinstance(value, dict) and not value:
            return None
        return value

    @model_validator(mode="after")
    def _requests_fit_connections(self) -> HTTPConfig:
        if self.maxrequests > self.maxconnections:
            raise ValueError("maxrequests must not exceed maxconnections (each request holds a connection)")
        return self

    @field_validator("addr")
    @classmethod
    def _addr_has_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:5000, or :5000 for every address)")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {int(port)} in {value!r} is out of range: ports go from 1 to 65535")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _header_lists(cls, value: Any) -> Any:
        # Distribution writes each header's values as a list (`X-Content-Type-Options: [nosniff]`).
        if not isinstance(value, dict):
            return value
        lists = {}
        for name, values in value.items():
            items = values if isinstance(values, list) else [values]
            if not _HEADER_NAME.fullmatch(str(name)):
                raise ValueError(f"{name!r} is not a header name")
            for item in items:
                if not isinstance(item, str | int | float) or isinstance(item, bool):
                    raise ValueError(f"{name}: {item!r} is not a header value")
                if not _HEADER_VALUE.fullmatch(str(item)):
                    raise ValueError(f"{name}: {str(item)!r} is not a header value (printable ASCII only)")
            lists[str(name)] = [str(item) for item in items]
        return lists

    @property
    def bind_host(self) -> str:
        """The address of http.addr to listen on (not http.host, the external URL)."""
        return self.addr.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.addr.rpartition(":")[2])


class FilesystemConfig(Section):
    rootdirectory: str = "./data"


class DeleteConfig(Section):
    enabled: bool = True


class ReadOnlyConfig(Section):
    enabled: bool = False


class UploadPurgingConfig(Section):
    """Distribution's: uploads no request wrote to for ``age`` are deleted every ``interval``
    (by a purgeUploads job that one worker of all the replicas runs)."""

    enabled: bool = True
    age: str = "168h"
    interval: str = "24h"
    dryrun: bool = False

    @field_validator("age", "interval")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _interval_positive(self) -> UploadPurgingConfig:
        if self.enabled and parse_duration(self.interval) <= timedelta(0):
            raise ValueError("interval must be longer than 0 (or set enabled: false)")
        return self


class MaintenanceConfig(Section):
    readonly: ReadOnlyConfig = ReadOnlyConfig()
    uploadpurging: UploadPurgingConfig = UploadPurgingConfig()


class S3Config(Section):
    """Distribution's s3 driver keys (the ones Wharf acts on), plus ``spooldirectory``."""

    bucket: str
    region: str = "us-east-1"
    regionendpoint: str = ""
    accesskey: str = ""
    secretkey: str = ""
    rootdirectory: str = ""
    forcepathstyle: bool = False
    skipverify: bool = False
    # Wharf's own: where request bodies wait on local disk before they go to the bucket.
    spooldirectory: str = ""


class RedirectConfig(Section):
    disable: bool = False


class StorageConfig(Section):
    filesystem: FilesystemConfig = FilesystemConfig()
    s3: S3Config | None = None
    redirect: RedirectConfig = RedirectConfig()
    delete: DeleteConfig = DeleteConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    fsync: bool = True


class DatabaseConfig(Section):
    # Empty means SQLite in the storage root directory: <rootdirectory>/wharf.db.
    url: str = ""

    @field_validator("url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class GCConfig(Section):
    # Blobs and untagged manifests seen (pushed, mounted, found by a HEAD) more recently
    # than this are never collected: pushes in progress stay safe.
    grace: str = gc_defaults.GRACE

    @field_validator("grace")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def grace_period(self) -> timedelta:
        return parse_duration(self.grace)


class JobsConfig(Section):
    """Wharf's own: the job worker inside every `wharf serve` process."""

    enabled: bool = True  # false: this process runs no jobs (run `wharf worker` elsewhere)
    poll: str = "1s"  # how often an idle worker looks for work
    heartbeat: str = "2s"  # how often a running job reports (and learns of a stop request)
    stale: str = "30s"  # a running job silent this long is taken over by another worker

    @field_validator("poll", "heartbeat", "stale")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class UploadsConfig(Section):
    """Wharf's own: limits on blob upload sessions."""

    # Sessions one repository may hold open at once (POSTs past it answer 429
    # TOOMANYREQUESTS); abandoned ones go with storage.maintenance.uploadpurging.
    maxopen: int = Field(default=1000, ge=1, le=1_000_000)


class AccountsConfig(Section):
    """Wharf's own accounts, teams and token server."""

    enabled: bool = False
    service: str = "wharf"  # the token audience: what clients name in ?service=
    issuer: str = "wharf"
    tokenttl: str = "5m"
    # A PEM file with an EC P-256 or RSA private key; empty: one generated once and kept in
    # the database, so that every replica signs with it.
    signingkey: str = ""
    # Where clients fetch tokens; empty: http.host's /auth/token, or else
    # <scheme>://<the request's host>/auth/token.
    realm: str = ""

    @field_validator("tokenttl")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @property
    def token_ttl(self) -> timedelta:
        return parse_duration(self.tokenttl)


class HtpasswdConfig(Section):
    """Distribution's: HTTP Basic against an htpasswd file of bcrypt hashes; every user it
    knows may do everything."""

    path: str
    realm: str = "wharf"

    @field_validator("path")
    @classmethod
    def _names_a_file(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the htpasswd file (make one with htpasswd -cB FILE USER)")
        return value

    @field_validator("realm")
    @classmethod
    def _quotable(cls, value: str) -> str:
        # It goes inside the quotes of WWW-Authenticate: Basic realm="...".
        if not value or not _HEADER_VALUE.fullmatch(value) or '"' in value or "\\" in value:
            raise ValueError(f"{value!r} cannot be a realm: printable ASCII without quotes or backslashes")
        return value


class TokenConfig(Section):
    """Distribution's: trust the tokens of an existing token server."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: str = ""  # PEM certificates whose keys sign the tokens
    jwks: str = ""  # or a JSON Web Key Set file of them


class AuthConfig(Section):
    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return {} if value is None else value  # `auth:` with nothing under it

    # With none of the below: no authentication, and (unless ``open``) only clients on a
    # loopback address are served.
    open: bool = False
    accounts: AccountsConfig = AccountsConfig()
    htpasswd: HtpasswdConfig | None = None
    token: TokenConfig | None = None

    @model_validator(mode="after")
    def _one_method(self) -> AuthConfig:
        chosen = [name for name in ("accounts", "htpasswd", "token") if self.method_set(name)]
        if len(chosen) > 1:
            raise ValueError(
                f"configure one of auth.accounts, auth.htpasswd or auth.token, not {' and '.join(chosen)}"
            )
        return self

    def method_set(self, name: str) -> bool:
        if name == "accounts":
            return self.accounts.enabled
        return getattr(self, name) is not None

    @property
    def method(self) -> Literal["accounts", "htpasswd", "token", "none"]:
        for name in ("accounts", "htpasswd", "token"):
            if self.method_set(name):
                return name
        return "none"


class Settings(Section):
    version: str = CONFIG_VERSION
    log: LogConfig = LogConfig()
    http: HTTPConfig = HTTPConfig()
    storage: StorageConfig = StorageConfig()
    database: DatabaseConfig = DatabaseConfig()
    gc: GCConfig = GCConfig()
    uploads: UploadsConfig = UploadsConfig()
    jobs: JobsConfig = JobsConfig()
    auth: AuthConfig = AuthConfig()
    # Distribution's keys that were accepted but do not apply: one line each, for start-up to log.
    _notices: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _one_storage_driver(self) -> Settings:
        if self.storage.s3 is not None and "filesystem" in self.storage.model_fields_set:
            raise ValueError("storage: configure one driver, filesystem or s3, not both")
        return self

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # Distribution's files say `version: 0.1`, which YAML reads as a number.
        return str(value) if isinstance(value, int | float) else value

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        if value != CONFIG_VERSION:
            raise ValueError(
                f"{value!r} is not a configuration version Wharf reads: "
                f"Wharf's, as Distribution's, is {CONFIG_VERSION}"
            )
        return value

    @property
    def notices(self) -> tuple[str, ...]:
        return tuple(self._notices)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        root = Path(self.storage.filesystem.rootdirectory).resolve()
        return f"sqlite:///{root / 'wharf.db'}"


# Which WHARF_* variable set each key path (and everything below it).
Origins = dict[tuple[str, ...], str]


def _merge_env(data: dict[str, Any], environ: Mapping[str, str]) -> Origins:
    origins: Origins = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split("_"))
        if not all(path):
            raise ConfigError(
                f"{name} is not a known setting: a setting's variable is WHARF_ and its key's parts "
                "joined by single underscores (WHARF_HTTP_ADDR)"
            )
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw  # not YAML, so the text itself: WHARF_HTTP_ADDR=[::1]:5000
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                section = ".".join(path[: depth + 1])
                raise ConfigError(f"{name}: {section} is not a section, so it has no {path[depth + 1]!r}")
            node = child
        node[path[-1]] = value
        origins[path] = name
    return origins


def _namer(origins: Origins) -> Namer:
    """Names a key path as the user wrote it: the WHARF_* variable that set it, else the key."""

    def name(path: tuple[str, ...]) -> str:
        for depth in range(len(path), 0, -1):
            variable = origins.get(path[:depth])
            if variable is not None:
                rest = ".".join(path[depth:])
                return f"{rest!r} in {variable}" if rest else variable
        below = sorted(variable for key, variable in origins.items() if key[: len(path)] == path)
        return ", ".join(below) if below else ".".join(path)

    return name


def _known_keys(parent: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] | None = Settings
    for part in parent:
        field = model.model_fields.get(part) if model is not None else None
        candidates = () if field is None else (field.annotation, *get_args(field.annotation))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    keys = list(model.model_fields) if model is not None else []
    return keys + [rule.path[-1] for rule in RULES if rule.path[:-1] == parent]


def _suggestion(path: tuple[str, ...], written: str) -> str:
    close = difflib.get_close_matches(path[-1], _known_keys(path[:-1]), n=1)
    if not close:
        return ""
    key = [*path[:-1], close[0]]
    if not written.startswith(ENV_PREFIX):
        return f" (did you mean {'.'.join(key)}?)"
    # The variable's own path, which may go on below the unknown key (WHARF_STORAGE_DELET_ENABLED).
    variable = written[len(ENV_PREFIX) :].lower().split("_")
    return f" (did you mean {ENV_PREFIX}{'_'.join(key + variable[len(key) :]).upper()}?)"


def _describe(error: ValidationError, name: Namer) -> list[str]:
    lines = []
    for item in error.errors():
        path = tuple(str(part) for part in item["loc"])
        where = name(path) if path else "configuration"
        if item["type"] == "extra_forbidden":
            lines.append(f"{where} is not a known setting{_suggestion(path, where)}")
        elif item["type"] == "missing":
            parent = name(path[:-1])
            source = f" ({'.'.join(path[:-1])} is set by {parent})" if parent.startswith(ENV_PREFIX) else ""
            lines.append(f"{'.'.join(path)} is required{source}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            given = item.get("input")
            if item["type"] != "value_error" and isinstance(given, str | int | float | bool):
                message += f" (got {given!r})"
            lines.append(f"{where}: {message}")
    return lines


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where in the text and what: ``line 3, column 9: mapping values are not allowed here``."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return str(error)
    mark = error.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    if error.context and error.context_mark is not None and error.context_mark.line != mark.line:
        text += f" ({error.context} from line {error.context_mark.line + 1})"
    return text


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"configuration {path} must be a mapping of keys to values")
    return loaded or {}


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the YAML file (if any), apply the environment, and validate every key. Distribution's
    keys that do not apply are taken out first (config_distribution.py): the ones accepted are
    in the result's ``notices``, the ones refused in the error, with the unknown keys."""
    environ = os.environ if environ is None else environ
    data = _read(path) if path is not None else {}
    origins = _merge_env(data, environ)
    name = _namer(origins)
    sources = ", ".join([str(path)] * (path is not None) + ["environment"] * bool(origins)) or "defaults"
    sifted = sift(data, name)
    problems = list(sifted.refusals)
    settings = None
    if not sifted.stop:
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            problems += _describe(exc, name)
    if problems or settings is None:
        lines = [f"invalid configuration ({sources}):", *(f"  {line}" for line in problems)]
        raise ConfigError("\n".join(lines))
    settings._notices = [*sifted.notices, *distribution_variables(environ)]
    return settings
