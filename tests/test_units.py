"""Pure functions: name and digest grammar, manifest parsing, range parsing, Accept matching."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wharf.errors import RegistryError
from wharf.oci.blobs import parse_range
from wharf.reference import validate_digest, validate_name, validate_tag
from wharf.services.manifest_format import OCI_INDEX, OCI_MANIFEST, accepts, parse_manifest

from .oci import Image, canonical, index, sha256


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a.b_c__d--e/f", "x" * 255, "0/1/2/3"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "a/", "/a", "a//b", "a/../b", "..", "a/.b", "a_", "a___b", "x" * 256, "a b", "a/.."]
)
def test_invalid_names(name):
    with pytest.raises(RegistryError) as error:
        validate_name(name)
    assert error.value.code.code == "NAME_INVALID"


@given(st.text(min_size=1, max_size=40))
def test_accepted_names_never_escape_a_directory(name):
    try:
        validate_name(name)
    except RegistryError:
        return
    parts = name.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts
    assert not name.startswith("/")


def test_tags_and_digests():
    assert validate_tag("v1.0_rc-1") == "v1.0_rc-1"
    for tag in (".x", "-x", "a" * 129, "a/b", ""):
        with pytest.raises(RegistryError):
            validate_tag(tag)
    assert validate_digest("sha256:" + "a" * 64)
    for digest in ("sha256:" + "a" * 63, "sha256:" + "A" * 64, "sha512:" + "a" * 64, "sha1:" + "a" * 40):
        with pytest.raises(RegistryError):
            validate_digest(digest)


def test_parse_image_lists_config_and_layers():
    image = Image.random(layers=3)
    parsed = parse_manifest(image.manifest, OCI_MANIFEST)
    assert parsed.media_type == OCI_MANIFEST
    assert parsed.blobs == tuple(sha256(blob) for blob in image.blobs)
    assert parsed.config_digest == parsed.blobs[0]
    assert parsed.children == ()


def test_parse_index_lists_children_and_infers_media_type():
    children = [Image.random(), Image.random()]
    payload = canonical({k: v for k, v in json.loads(index(children)).items() if k != "mediaType"})
    parsed = parse_manifest(payload, None)
    assert parsed.media_type == OCI_INDEX
    assert parsed.children == tuple(child.digest for child in children)


def test_foreign_layers_need_not_be_stored():
    image = Image.random(layers=1)
    document = json.loads(image.manifest)
    document["layers"].append(
        {
            "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "digest": "sha256:" + "b" * 64,
            "size": 10,
            "urls": ["https://example.invalid/layer"],
        }
    )
    parsed = parse_manifest(canonical(document), OCI_MANIFEST)
    assert "sha256:" + "b" * 64 not in parsed.blobs
    assert len(parsed.blobs) == 2


def test_artifact_type_falls_back_to_config_media_type_for_referrers():
    subject = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "c" * 64, "size": 1}
    parsed = parse_manifest(Image.random(subject=subject).manifest, OCI_MANIFEST)
    assert parsed.subject_digest == subject["digest"]
    assert parsed.artifact_type == "application/vnd.oci.image.config.v1+json"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 1)),
        ("bytes=10-", (10, 100)),
        ("bytes=-1", (99, 100)),
        ("bytes=0-1000", (0, 100)),
        ("bytes=1-2,5-6", None),
    ],
)
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=5-1", "bytes=-0", "bytes=-", "items=1-2", "bytes=a-b"]
)
def test_parse_range_unsatisfiable(header):
    with pytest.raises(RegistryError) as error:
        parse_range(header, 100)
    assert error.value.status == 416


def test_accepts():
    assert accepts([], OCI_MANIFEST)
    assert accepts([f"{OCI_INDEX}, {OCI_MANIFEST};q=0.9"], OCI_MANIFEST)
    assert accepts(["application/*"], OCI_MANIFEST)
    assert not accepts(["application/vnd.docker.distribution.manifest.v2+json"], OCI_MANIFEST)


def test_migrate_head_names_the_newest_migration():
    from wharf.meta import migrate

    assert migrate.head_revision() == migrate.HEAD


def test_empty_upload_sessions_never_push_out_a_written_one():
    """4,100 sessions opened and never written to (a client's flood of POSTs) leave a
    written upload's hash state cached: rebuilding it would read all its bytes back."""
    from wharf.services.uploads import MAX_CACHED_HASHERS, _Hashers

    hashers = _Hashers()
    written = hashlib.sha256(b"x" * 100)
    hashers.keep("big", 100, written)
    for n in range(MAX_CACHED_HASHERS + 4):
        hashers.keep(f"empty-{n}", 0, hashlib.sha256())
    assert hashers.take("big", 100) is written
    assert "empty-0" not in hashers  # the oldest empty ones went instead
    assert f"empty-{MAX_CACHED_HASHERS + 3}" in hashers
    # Among written ones, the least recently used goes first.
    for n in range(MAX_CACHED_HASHERS + 1):
        hashers.keep(f"w-{n}", 1, hashlib.sha256(b"y"))
    assert "w-0" not in hashers and f"w-{MAX_CACHED_HASHERS}" in hashers


def test_sqlite_commits_are_on_disk_when_they_return_unless_fsync_is_off(tmp_path):
    """storage.fsync (the default) makes SQLite sync every commit (synchronous=FULL): with
    WAL's NORMAL a power loss may undo a commit already answered, an acknowledged push or a
    collection's row delete whose unlink survived. With fsync off, NORMAL."""
    from wharf.meta.engines import ThreadedSQLite

    for durable, expected in ((True, 2), (False, 1)):
        database = ThreadedSQLite(
            f"sqlite:///{tmp_path / f'{durable}.db'}", tmp_path / f"locks-{durable}", durable
        )
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected
        database.engine.dispose()
