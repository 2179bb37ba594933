"""CNCF Distribution's configuration keys that Wharf does not apply, and what becomes of each.

A Distribution ``config.yml`` should start Wharf. Keys whose meaning Wharf has are fields of
the settings (config.py); every other key any version of Distribution has is listed here, as

- ``ignore``: it changes nothing in Wharf (Distribution's default, or what Wharf does anyway),
  accepted silently;
- ``warn``: accepted, with one warning line naming the key and why it does not apply;
- ``refuse``: Wharf cannot honour it and a user relies on it (access control, TLS,
  encryption, a policy on what may be pushed): start-up stops, naming the key and what to do.

A warned or refused key whose value changes nothing (``enabled: false``, an empty section,
Distribution's default) is accepted silently. A key neither here nor in the settings, which
no version of Distribution has, is refused as unknown.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# Names a key path as the user wrote it: the dotted key, or the WHARF_* variable that set it.
Namer = Callable[[tuple[str, ...]], str]
Inert = Callable[[Any, Mapping[str, Any]], bool]

# Sections of storage that are not a driver (fsync is Wharf's own).
STORAGE_OPTIONS = frozenset({"maintenance", "cache", "delete", "redirect", "tag", "fsync"})
# Every driver Distribution has had; Wharf has two of them.
DRIVERS = ("filesystem", "s3", "azure", "gcs", "swift", "oss", "inmemory", "rados")
WHARF_DRIVERS = ("filesystem", "s3")
# Sections only Distribution has: emptied by the rules, they go; anything left in them is unknown.
DISTRIBUTION_SECTIONS = (("validation", "manifests"), ("validation",), ("health",))


def _empty(value: Any, _root: Mapping[str, Any] | None = None) -> bool:
    return value is None or value == "" or value == {} or value == [] or value is False


def _get(value: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _one_of(*harmless: Any) -> Inert:
    def inert(value: Any, _root: Mapping[str, Any]) -> bool:
        normal = value.lower() if isinstance(value, str) else value
        return _empty(value) or normal in harmless

    return inert


def _unless(*path: str) -> Inert:
    """Inert unless the flag at path (inside the key's value) is true."""

    def inert(value: Any, _root: Mapping[str, Any]) -> bool:
        return _get(value, *path) is not True

    return inert


def _never(_value: Any, _root: Mapping[str, Any]) -> bool:
    return False


def _all_disabled(value: Any, _root: Mapping[str, Any]) -> bool:
    items = value if isinstance(value, list) else []
    return _empty(value) or all(_get(item, "disabled") is True for item in items)


def _no_enabled_endpoint(value: Any, root: Mapping[str, Any]) -> bool:
    return _all_disabled(_get(value, "endpoints"), root)


def _secure_harmless(value: Any, root: Mapping[str, Any]) -> bool:
    # Wharf takes http or https from regionendpoint, as a URL says it.
    endpoint = _get(root, "storage", "s3", "regionendpoint")
    return value is not False or (isinstance(endpoint, str) and endpoint.startswith("http://"))


def _redirects_off(value: Any, root: Mapping[str, Any]) -> bool:
    return _empty(value) or _get(root, "storage", "redirect", "disable") is True


def _urls_unchecked(value: Any, root: Mapping[str, Any]) -> bool:
    return _empty(value) or _get(root, "validation", "disabled") is True


@dataclass(frozen=True)
class Rule:
    path: tuple[str, ...]
    action: Literal["ignore", "warn", "refuse"]
    reason: str
    inert: Inert = _empty


def _s3(key: str, action: Literal["ignore", "warn", "refuse"], reason: str, inert: Inert = _empty) -> Rule:
    return Rule(("storage", "s3", key), action, reason, inert)


_PART_SIZES = "Wharf sizes and copies the parts of S3 multipart uploads itself"

RULES: tuple[Rule, ...] = (
    # -- log ---------------------------------------------------------------------------------
    Rule(
        ("log", "accesslog"),
        "warn",
        "Wharf writes no access log; GET /metrics counts requests by route and status",
        lambda value, _root: value is None or _get(value, "disabled") is True,
    ),
    Rule(("log", "hooks"), "warn", "Wharf sends no mail on log events", _all_disabled),
    Rule(("log", "reportcaller"), "warn", "Wharf's log lines do not name the calling function"),
    # -- storage -----------------------------------------------------------------------------
    *(
        Rule(
            ("storage", driver),
            "refuse",
            f"Wharf keeps blobs on the filesystem or S3 (storage.filesystem or storage.s3); "
            f"it has no {driver} driver",
            _never,
        )
        for driver in DRIVERS
        if driver not in WHARF_DRIVERS
    ),
    Rule(
        ("storage", "filesystem", "maxthreads"),
        "warn",
        "Wharf runs filesystem calls on its own thread pool",
    ),
    Rule(
        ("storage", "cache"),
        "warn",
        "Wharf has no blob descriptor cache: its database answers which blobs exist",
    ),
    Rule(
        ("storage", "tag"),
        "warn",
        "Wharf reads a repository's tags from its database in one query, not by concurrent lookups",
    ),
    _s3("accelerate", "warn", "Wharf does not use S3 Transfer Acceleration"),
    _s3("chunksize", "warn", _PART_SIZES),
    _s3("multipartcopychunksize", "warn", _PART_SIZES),
    _s3("multipartcopymaxconcurrency", "warn", _PART_SIZES),
    _s3("multipartcopythresholdsize", "warn", _PART_SIZES),
    _s3("multipartcombinesmallpart", "warn", _PART_SIZES),
    _s3(
        "encrypt",
        "refuse",
        "Wharf does not ask S3 to encrypt what it writes; remove encrypt (and keyid) and turn on "
        "default encryption for the bucket, which S3 then applies to every object (SSE-S3 or SSE-KMS)",
    ),
    # Distribution reads keyid only with encrypt: true, which is refused above.
    _s3("keyid", "ignore", "used only with encrypt: true"),
    _s3(
        "secure",
        "warn",
        "Wharf takes http or https from regionendpoint; write it as http://host:port",
        _secure_harmless,
    ),
    _s3("v4auth", "warn", "Wharf always signs with AWS Signature Version 4", lambda v, _r: v is not False),
    _s3(
        "storageclass",
        "warn",
        "Wharf writes objects in the bucket's default storage class (a bucket lifecycle rule can move them)",
        _one_of("standard", "none"),
    ),
    _s3("objectacl", "warn", "Wharf writes objects with the bucket's default ACL", _one_of("private")),
    _s3("useragent", "warn", "Wharf sends the AWS SDK's own User-Agent"),
    _s3(
        "usedualstack",
        "warn",
        "Wharf does not pick dual-stack endpoints; set regionendpoint to https://s3.dualstack.<region>.amazonaws.com",
    ),
    _s3(
        "usefipsendpoint",
        "refuse",
        "Wharf does not pick FIPS endpoints by itself; remove usefipsendpoint and set regionendpoint "
        "to the FIPS endpoint (https://s3-fips.<region>.amazonaws.com)",
    ),
    _s3("loglevel", "warn", "Wharf does not log S3 requests", _one_of("off")),
    _s3(
        "redirectendpoint",
        "refuse",
        "Wharf presigns blob redirects for regionendpoint only; remove redirectendpoint, or set "
        "storage.redirect.disable: true so that Wharf streams blobs itself",
        _redirects_off,
    ),
    _s3(
        "sessiontoken",
        "refuse",
        "Wharf does not pass a session token to S3; leave accesskey, secretkey and sessiontoken out "
        "and set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN instead",
    ),
    _s3(
        "credentialsconfigpath",
        "warn",
        "Wharf reads AWS credentials from accesskey and secretkey or the AWS SDK's usual places; "
        "point AWS_SHARED_CREDENTIALS_FILE at this file instead",
    ),
    # -- http --------------------------------------------------------------------------------
    Rule(("http", "net"), "refuse", "Wharf listens on TCP only (http.addr)", _one_of("tcp", "tcp4", "tcp6")),
    Rule(
        ("http", "prefix"),
        "refuse",
        "Wharf serves /v2 at the root of http.addr; remove http.prefix, or have your proxy strip it",
        _one_of("/"),
    ),
    Rule(
        ("http", "secret"),
        "warn",
        "Wharf signs no upload state: uploads are kept in its database, so any replica can continue them",
    ),
    Rule(("http", "relativeurls"), "ignore", "Wharf's Location headers are always relative"),
    Rule(("http", "draintimeout"), "warn", "on SIGTERM the HTTP server drains connections in its own time"),
    Rule(
        ("http", "tls", "letsencrypt"),
        "refuse",
        "Wharf gets no certificates from Let's Encrypt; give http.tls.certificate and http.tls.key "
        "(certbot or a proxy can get them)",
        lambda value, _root: _empty(_get(value, "cachefile")) and _empty(_get(value, "hosts")),
    ),
    Rule(("http", "tls", "ciphersuites"), "warn", "the HTTP server chooses its cipher suites itself"),
    Rule(
        ("http", "debug"),
        "warn",
        "Wharf has no debug server; GET /metrics on http.addr serves the Prometheus metrics",
        lambda value, _root: _empty(_get(value, "addr")),
    ),
    # Distribution applies http2 to TLS connections only; Wharf serves HTTP/1.1 there too (its
    # slow-client timeouts are HTTP/1's).
    Rule(
        ("http", "http2"),
        "warn",
        "Wharf serves HTTP/1.1 only, over TLS too",
        lambda value, root: (
            _empty(value)
            or _get(value, "disabled") is True
            or _empty(_get(root, "http", "tls", "certificate"))
        ),
    ),
    Rule(("http", "h2c"), "warn", "Wharf's HTTP server settles HTTP versions itself", _unless("enabled")),
    # -- the rest ----------------------------------------------------------------------------
    Rule(
        ("auth", "silly"),
        "refuse",
        "Wharf has no 'silly' authentication (Distribution's, for development); use auth.htpasswd, "
        "auth.token or Wharf's own accounts (auth.accounts.enabled: true)",
    ),
    Rule(
        ("auth", "token", "autoredirect"), "warn", "Wharf's token challenges name auth.token.realm as written"
    ),
    Rule(
        ("middleware",),
        "refuse",
        "Wharf runs no Distribution middleware (registry, repository or storage, such as cloudfront); "
        "remove middleware: (blob GETs go to the bucket itself unless storage.redirect.disable is true)",
    ),
    Rule(("reporting",), "warn", "Wharf reports to neither Bugsnag nor New Relic"),
    Rule(
        ("notifications",),
        "refuse",
        "Wharf does not send notifications yet; set disabled: true on each endpoint or remove "
        "notifications: (GET /api/v0/activities lists every push and delete)",
        _no_enabled_endpoint,
    ),
    Rule(("redis",), "warn", "Wharf uses no Redis: it has no blob descriptor cache"),
    Rule(
        ("health", "storagedriver"),
        "warn",
        "Wharf runs no periodic storage check; GET /readyz checks the database and the storage at each call",
        _unless("enabled"),
    ),
    *(
        Rule(
            ("health", kind),
            "warn",
            "Wharf runs no health checks of its own; GET /readyz checks the database and the storage",
        )
        for kind in ("file", "http", "tcp")
    ),
    Rule(
        ("proxy",),
        "refuse",
        "Wharf is not a pull-through cache; remove proxy: (Wharf would serve its own repositories, "
        "not the remote registry's)",
        lambda value, _root: _empty(_get(value, "remoteurl")),
    ),
    Rule(("compatibility",), "warn", "Wharf refuses schema 1 manifests", _unless("schema1", "enabled")),
    Rule(("validation", "enabled"), "ignore", "the switch of the checks below"),
    Rule(("validation", "disabled"), "ignore", "the switch of the checks below"),
    Rule(
        ("validation", "manifests", "urls"),
        "refuse",
        "Wharf does not check the URLs of foreign layers against allow and deny lists; "
        "remove validation.manifests.urls",
        _urls_unchecked,
    ),
    Rule(
        ("validation", "manifests", "indexes"),
        "warn",
        "Wharf requires every manifest an index lists to be in the repository",
        lambda value, _root: _empty(value) or str(_get(value, "platforms") or "all").lower() == "all",
    ),
    Rule(
        ("policy",),
        "refuse",
        "Wharf does not restrict what repositories hold by media type; remove policy.repository.classes",
        lambda value, _root: _empty(_get(value, "repository", "classes")),
    ),
    Rule(("catalog",), "warn", "Wharf pages GET /v2/_catalog at the client's n, at most 10000 names"),
    Rule(("tags",), "warn", "Wharf pages GET /v2/<name>/tags/list at the client's n, at most 10000 tags"),
)


@dataclass
class Sifted:
    notices: list[str]
    refusals: list[str]
    stop: bool = False  # the rest cannot be read as Wharf's settings


# Distribution's top-level keys, for its REGISTRY_* variables.
DISTRIBUTION_TOP = frozenset(
    {"version", "log", "loglevel", "storage", "auth", "middleware", "reporting", "http", "notifications"}
    | {"redis", "health", "proxy", "compatibility", "validation", "policy", "catalog", "tags"}
)


def distribution_variables(environ: Mapping[str, str]) -> list[str]:
    """Distribution's own variables (REGISTRY_HTTP_SECRET), which Wharf does not read: a notice each."""
    notices = []
    for variable in sorted(environ):
        parts = variable.split("_")
        if parts[0] == "REGISTRY" and len(parts) > 1 and parts[1].lower() in DISTRIBUTION_TOP:
            wharf = "WHARF_" + "_".join(parts[1:])
            notices.append(f"{variable} is not applied: it is Distribution's variable; Wharf reads {wharf}")
    return notices


def _parent(data: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = data
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def translate(data: dict[str, Any], name: Namer) -> Sifted:
    """Bring Distribution's spellings to Wharf's, in place: the deprecated top-level ``loglevel``,
    ``storage: filesystem`` as a bare name, a driver given no parameters, ``logstash``; and
    refuse two drivers at once."""
    sifted = Sifted([], [])
    if "loglevel" in data:
        level = data.pop("loglevel")
        log = data.setdefault("log", {})
        if isinstance(log, dict):
            log.setdefault("level", level)
    storage = data.get("storage")
    if isinstance(storage, str):
        storage = data["storage"] = {storage: {}}
    if isinstance(storage, dict):
        for driver in WHARF_DRIVERS:
            if driver in storage and storage[driver] is None:
                storage[driver] = {}
        drivers = [key for key in storage if key in DRIVERS]
        if len(drivers) > 1:
            named = ", ".join(name(("storage", driver)) for driver in drivers)
            sifted.refusals.append(f"storage: configure one storage driver, not {len(drivers)} ({named})")
    log = data.get("log")
    if isinstance(log, dict) and str(log.get("formatter")).lower() == "logstash":
        log["formatter"] = "json"
        sifted.notices.append(
            f"{name(('log', 'formatter'))}: logstash is written as json: Wharf has no logstash formatter"
        )
    return sifted


def sift(data: dict[str, Any], name: Namer) -> Sifted:
    """Take Distribution's keys that Wharf does not apply out of data, in place: a notice for
    each warned key, a refusal for each refused one, as the user wrote them."""
    sifted = translate(data, name)
    if sifted.refusals:
        sifted.stop = True
        return sifted
    root = copy.deepcopy(data)  # what the user wrote, for rules that read other keys
    for rule in RULES:
        parent = _parent(data, rule.path[:-1])
        if parent is None or rule.path[-1] not in parent:
            continue
        value = parent.pop(rule.path[-1])
        if rule.action == "ignore" or rule.inert(value, root):
            continue
        where = name(rule.path)
        if rule.action == "warn":
            sifted.notices.append(f"{where} is not applied: {rule.reason}")
        else:
            sifted.refusals.append(f"{where}: {rule.reason}")
    for path in DISTRIBUTION_SECTIONS:
        parent = _parent(data, path[:-1])
        if parent is None or path[-1] not in parent:
            continue
        section = parent[path[-1]]
        if _empty(section):
            del parent[path[-1]]
        elif isinstance(section, dict):
            sifted.refusals += [f"{name((*path, str(key)))} is not a known setting" for key in section]
            del parent[path[-1]]
    return sifted
