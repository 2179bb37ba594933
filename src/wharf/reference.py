"""Repository names, tags and digests, validated against the distribution spec's grammar.

Everything that reaches a store has passed through here first, so no name or digest
can address a path outside the storage root.
"""

from __future__ import annotations

import re

from .errors import DIGEST_INVALID, NAME_INVALID, TAG_INVALID, RegistryError

# distribution-spec: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# Algorithms we can verify; the hex length is fixed per algorithm.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}
DIGEST_RE = re.compile(r"(sha256|sha512):([a-f0-9]+)")
MAX_NAME_LENGTH = 255
# RFC 6838 as the image spec's descriptor schema writes it: each half at most 127 characters,
# so a media type fits the 255 characters its columns hold, and holds no NUL or control byte.
MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
# The largest size, offset or count anything here holds: the databases' 64-bit integers.
INT64_MAX = 2**63 - 1


def is_digest(reference: str) -> bool:
    return ":" in reference


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and NAME_RE.fullmatch(name) is not None


def validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise RegistryError(NAME_INVALID, {"name": name}, f"invalid repository name: {name!r}")
    return name


def validate_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise RegistryError(TAG_INVALID, {"tag": tag}, f"invalid tag: {tag!r}")
    return tag


def is_valid_digest(digest: str) -> bool:
    match = DIGEST_RE.fullmatch(digest)
    return match is not None and len(match.group(2)) == DIGEST_ALGORITHMS[match.group(1)]


def validate_digest(digest: str) -> str:
    if not is_valid_digest(digest):
        raise RegistryError(DIGEST_INVALID, {"digest": digest}, f"invalid or unsupported digest: {digest!r}")
    return digest


def is_media_type(value: str) -> bool:
    return MEDIA_TYPE_RE.fullmatch(value) is not None


def decimal(raw: str) -> int | None:
    """A non-negative decimal as HTTP writes one (ASCII digits alone), or None when it is not
    one. A value past int64 comes back as ``INT64_MAX + 1`` without being parsed in full:
    Python refuses to parse integers of more than 4,300 digits (a ValueError), and nothing
    this registry stores can be that large anyway."""
    if not raw or not (raw.isascii() and raw.isdigit()):
        return None
    digits = raw.lstrip("0") or "0"
    if len(digits) > len(str(INT64_MAX)):
        return INT64_MAX + 1
    return min(int(digits), INT64_MAX + 1)


def validate_reference(reference: str) -> str:
    """A manifest reference: a digest when it contains a colon, a tag otherwise."""
    return validate_digest(reference) if is_digest(reference) else validate_tag(reference)
