"""Garbage collection through `wharf garbage-collect`, on a registry of each test's own, on
both stacks: the cases the issue names, each checked on the bytes in storage too."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from wharf.meta.sql import SQLMetadataStore
from wharf.services.gc import IMPORTING

from .gc import (
    blob_rows,
    eligible,
    run_gc,
    run_on_a_terminal,
    set_blob_seen,
    store_file,
    stored,
    stored_digests,
)
from .oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    descriptor,
    index,
    push_blob,
    push_image,
    push_manifest,
    sha256,
)

pytestmark = pytest.mark.slow


def pulls(client, repo: str, reference: str) -> bool:
    """The whole image comes back, every blob verified against its digest."""
    response = client.get(
        f"/v2/{repo}/manifests/{reference}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    )
    if response.status_code != 200:
        return False
    document = response.json()
    if "manifests" in document:
        return all(pulls(client, repo, child["digest"]) for child in document["manifests"])
    for entry in [document["config"], *document["layers"]]:
        blob = client.get(f"/v2/{repo}/blobs/{entry['digest']}")
        if blob.status_code != 200 or sha256(blob.content) != entry["digest"]:
            return False
    return True


def test_documented_example_keeps_a_and_its_blobs_and_removes_what_only_b_used(own_server):
    shared, only_a, only_b = b"layer a" * 100, b"layer b" * 100, b"layer c" * 100
    a = Image.random(layers=0)
    a.layers = [shared, only_a]
    b = Image.random(layers=0)
    b.layers = [shared, only_b]
    with own_server.client() as client:
        push_image(client, "lib/app", a, "a")
        digest_b = push_image(client, "lib/app", b, "b")
        assert client.delete(f"/v2/lib/app/manifests/{digest_b}").status_code == 202

        result = run_gc(own_server, "--grace", "0s")

        assert eligible(result.stdout) == {sha256(only_b), sha256(b.config)}
        assert "2 blobs eligible for deletion" in result.stdout
        assert "deleted 0 manifests and 2 blobs" in result.stdout
        assert pulls(client, "lib/app", "a")
        for gone in (only_b, b.config):
            assert not stored(own_server, sha256(gone))
            assert client.head(f"/v2/lib/app/blobs/{sha256(gone)}").status_code == 404
        assert stored_digests(own_server) == {sha256(x) for x in a.blobs}
        assert blob_rows(own_server) == {sha256(x) for x in a.blobs}
        assert client.get(f"/v2/lib/app/manifests/{digest_b}").status_code == 404


def test_tagged_index_keeps_its_children_when_untagged_manifests_go(own_server):
    amd, arm = Image.random(), Image.random()
    lone, old_amd = Image.random(), Image.random()
    with own_server.client() as client:
        for child in (amd, arm, old_amd):
            push_image(client, "lib/multi", child)  # children go by digest, untagged
        push_manifest(client, "lib/multi", "latest", index([amd, arm]), OCI_INDEX)
        old_index = index([old_amd])
        push_manifest(client, "lib/multi", sha256(old_index), old_index, OCI_INDEX)  # untagged index
        push_image(client, "lib/multi", lone)  # untagged image

        # Without --delete-untagged every manifest is live.
        assert eligible(run_gc(own_server, "--grace", "0s").stdout) == set()

        result = run_gc(own_server, "--grace", "0s", "--delete-untagged")
        assert f"lib/multi: manifest eligible for deletion: {sha256(old_index)}" in result.stdout
        assert (
            "3 manifests eligible for deletion" in result.stdout
        )  # the old index, its child, the lone image
        assert pulls(client, "lib/multi", "latest")
        for gone in (sha256(old_index), old_amd.digest, lone.digest):
            assert client.get(f"/v2/lib/multi/manifests/{gone}").status_code == 404
        assert stored_digests(own_server) == {sha256(x) for image in (amd, arm) for x in image.blobs}


def test_referrers_of_a_live_image_stay_and_of_a_deleted_one_go(own_server):
    kept, deleted = Image.random(), Image.random()
    with own_server.client() as client:
        push_image(client, "lib/signed", kept, "kept")
        push_image(client, "lib/signed", deleted, "deleted")
        signatures = {}
        for name, subject in (("kept", kept), ("deleted", deleted)):
            signature = Image.random(
                layers=1,
                subject=descriptor(OCI_MANIFEST, subject.manifest),
                artifact_type="application/vnd.example.signature",
            )
            push_image(client, "lib/signed", signature)
            signatures[name] = signature
        assert client.delete(f"/v2/lib/signed/manifests/{deleted.digest}").status_code == 202

        result = run_gc(own_server, "--grace", "0s")

        assert f"lib/signed: manifest eligible for deletion: {signatures['deleted'].digest}" in result.stdout
        assert pulls(client, "lib/signed", "kept")
        assert pulls(client, "lib/signed", signatures["kept"].digest)
        referrers = client.get(f"/v2/lib/signed/referrers/{kept.digest}").json()["manifests"]
        assert [r["digest"] for r in referrers] == [signatures["kept"].digest]
        assert client.get(f"/v2/lib/signed/manifests/{signatures['deleted'].digest}").status_code == 404
        expected = {sha256(x) for image in (kept, signatures["kept"]) for x in image.blobs}
        assert stored_digests(own_server) == expected


def test_layers_shared_across_repositories_stay_while_one_repository_uses_them(own_server):
    base = b"base layer" * 1000
    one, two = Image.random(layers=0), Image.random(layers=0)
    one.layers, two.layers = [base, b"one"], [base, b"two"]
    with own_server.client() as client:
        push_image(client, "team/one", one, "v1")
        push_image(client, "team/two", two, "v1")
        assert client.delete(f"/v2/team/one/manifests/{one.digest}").status_code == 202

        result = run_gc(own_server, "--grace", "0s")

        assert eligible(result.stdout) == {sha256(one.config), sha256(b"one")}
        assert pulls(client, "team/two", "v1")
        assert stored(own_server, sha256(base))


def test_a_blob_never_referenced_is_collected_only_after_the_grace_period(own_server):
    with own_server.client() as client:
        digest = push_blob(client, "lib/loose", b"uploaded, never used")

        assert eligible(run_gc(own_server, "--grace", "1h").stdout) == set()
        assert stored(own_server, digest)
        set_blob_seen(own_server, digest, datetime.now(UTC) - timedelta(hours=2))
        assert eligible(run_gc(own_server, "--grace", "1h").stdout) == {digest}
        assert not stored(own_server, digest)
        assert client.head(f"/v2/lib/loose/blobs/{digest}").status_code == 404


def test_a_head_within_the_grace_period_keeps_the_blob_for_the_push_that_asked(own_server):
    """Invariant 2: a push that was told "exists" by a HEAD can still reference the blob."""
    image = Image.random()
    with own_server.client() as client:
        for blob in image.blobs:
            push_blob(client, "lib/slow", blob)
        old = datetime.now(UTC) - timedelta(hours=2)
        for blob in image.blobs:
            set_blob_seen(own_server, sha256(blob), old)
        # A second push of the same image asks first, and skips the uploads.
        for blob in image.blobs:
            assert client.head(f"/v2/lib/slow/blobs/{sha256(blob)}").status_code == 200

        assert eligible(run_gc(own_server, "--grace", "1h").stdout) == set()

        push_manifest(client, "lib/slow", "v1", image.manifest, OCI_MANIFEST)
        assert pulls(client, "lib/slow", "v1")


def test_after_gc_a_collected_layer_is_uploaded_again_and_the_image_pulls(own_server):
    image = Image.random()
    with own_server.client() as client:
        push_image(client, "lib/again", image, "v1")
        assert client.delete(f"/v2/lib/again/manifests/{image.digest}").status_code == 202
        run_gc(own_server, "--grace", "0s")

        for blob in image.blobs:
            # No stale answer: the registry says it lacks the blob, so the client sends it.
            assert client.head(f"/v2/lib/again/blobs/{sha256(blob)}").status_code == 404
        push_image(client, "lib/again", image, "v1")
        assert pulls(client, "lib/again", "v1")
        assert stored_digests(own_server) == {sha256(x) for x in image.blobs}


def test_dry_run_names_exactly_what_the_real_run_deletes(own_server):
    """Invariant 4: same plan, reported instead of applied."""
    with own_server.client() as client:
        keep, drop = Image.random(layers=3), Image.random(layers=3)
        push_image(client, "lib/dry", keep, "keep")
        push_image(client, "lib/dry", drop, "drop")
        push_blob(client, "lib/dry", b"dangling")
        assert client.delete("/v2/lib/dry/manifests/drop").status_code == 202
        assert client.delete(f"/v2/lib/dry/manifests/{drop.digest}").status_code == 202
        orphan = b"left by a crash"
        store_file(own_server, orphan, sha256(orphan))
        before = stored_digests(own_server)

        dry = run_gc(own_server, "--grace", "0s", "--dry-run", "--scan-storage")
        assert stored_digests(own_server) == before  # nothing deleted
        real = run_gc(own_server, "--grace", "0s", "--scan-storage")

        planned = eligible(dry.stdout)
        assert planned == {sha256(x) for x in drop.blobs} | {sha256(b"dangling"), sha256(orphan)}
        assert eligible(real.stdout) == planned
        assert before - stored_digests(own_server) == planned
        size = sum(len(x) for x in drop.blobs) + len(b"dangling") + len(orphan)
        assert (
            f"{size} B" in dry.stdout.splitlines()[-1]
            or f"{size / 1024:.1f} KiB" in dry.stdout.splitlines()[-1]
        )


def test_files_no_row_knows_wait_for_the_grace_period(own_server):
    orphan = b"bytes whose row never came"
    store_file(own_server, orphan, sha256(orphan))
    assert eligible(run_gc(own_server, "--grace", "1h", "--scan-storage").stdout) == set()
    assert stored(own_server, sha256(orphan))
    assert eligible(run_gc(own_server, "--grace", "0s").stdout) == set()  # no scan, no look
    assert eligible(run_gc(own_server, "--grace", "0s", "--scan-storage").stdout) == {sha256(orphan)}
    assert not stored(own_server, sha256(orphan))


def test_an_unfinished_import_keeps_files_no_row_knows(own_server):
    """Until an import of a Distribution directory has finished, the blobs of repositories it
    has yet to adopt look like files no row knows: a storage scan keeps them."""

    def importing(value: dict[str, str]) -> None:
        async def put() -> None:
            store = SQLMetadataStore(own_server.database_url)
            try:
                await store.jobs.put_setting(IMPORTING, value)
            finally:
                await store.close()

        asyncio.run(put())

    orphan = b"a blob of a repository not imported yet"
    store_file(own_server, orphan, sha256(orphan))
    importing({"root": "/srv/registry"})
    kept = run_gc(own_server, "--grace", "0s", "--scan-storage")
    assert eligible(kept.stdout) == set() and stored(own_server, sha256(orphan))
    assert "an import of /srv/registry has not finished" in kept.stdout
    importing({})
    assert eligible(run_gc(own_server, "--grace", "0s", "--scan-storage").stdout) == {sha256(orphan)}


def test_progress_shows_on_a_terminal_and_stays_out_of_logs(make_server):
    """A progress bar on stderr when it is a terminal; plain lines, no escape codes, in a log."""

    from .gc import gc_command

    server = make_server()
    with server.client() as client:
        for _number in range(30):
            image = Image.random(layers=1, size=64)
            push_image(client, "lib/bar", image)
            assert client.delete(f"/v2/lib/bar/manifests/{image.digest}").status_code == 202

    piped = run_gc(server, "--grace", "0s", "--dry-run")
    assert "\x1b[" not in piped.stdout + piped.stderr

    result, shown = run_on_a_terminal(gc_command(server, "--grace", "0s", "--batch-size", "5"))
    assert result.returncode == 0
    assert "deleted 0 manifests and 60 blobs" in result.stdout
    assert "\x1b[" not in result.stdout  # stdout stays plain: it is the report
    assert b"blobs" in shown and b"\x1b[" in shown, shown[-500:]


def test_a_time_budget_stops_cleanly_and_the_next_run_finishes(own_server):
    images = [Image.random(layers=1, size=64) for _ in range(4)]
    with own_server.client() as client:
        for image in images:
            push_image(client, "lib/budget", image)
            assert client.delete(f"/v2/lib/budget/manifests/{image.digest}").status_code == 202

        stopped = run_gc(own_server, "--grace", "0s", "--max-duration", "0s")
        assert "deleted 0 manifests and 0 blobs" in stopped.stdout
        assert "stopped: time budget of 0:00:00 used up" in stopped.stdout
        assert len(stored_digests(own_server)) == 8

        run_gc(own_server, "--grace", "0s")
        assert stored_digests(own_server) == set()
