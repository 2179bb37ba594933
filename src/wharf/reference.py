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


def is_digest(reference: str) -> bool:
    return ":" in reference


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.fullmatch(name):
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


def validate_reference(reference: str) -> str:
    """A manifest reference: a digest when it contains a colon, a tag otherwise."""
    return validate_digest(reference) if is_digest(reference) else validate_tag(reference)
