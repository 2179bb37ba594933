"""Who may do what, on /v2 and /api/v0, with Wharf's accounts on (both stacks): pulls need
read access (or a public repository), pushes and deletes need read-write, jobs and GC belong
to system administrators; a refusal changes nothing and says 401 or 403 as the spec does."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .dtr import ROOT, call, expect, login, users
from .oci import Image, error_codes, push_image, sha256
from .server import WharfServer

BOB, CAROL = login("bob"), login("carol")
DRY_RUN = {"job": "registryGC", "parameters": {"dryRun": True}}


@pytest.fixture
def registry(accounts_server: WharfServer) -> Iterator[httpx.Client]:
    users(accounts_server, "bob", "carol")
    with accounts_server.client() as client:
        yield client


def as_(client: httpx.Client, who: tuple[str, str] | None) -> httpx.Client:
    """The same server, as ``who`` (None: anonymous)."""
    return httpx.Client(base_url=str(client.base_url), auth=who, timeout=client.timeout)


def refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert error_codes(response) == (["UNAUTHORIZED"] if status == 401 else ["DENIED"])


def tags(client: httpx.Client, repository: str) -> list[str] | None:
    """The repository's tags as the administrator sees them; None when it does not exist."""
    answer = client.get(f"/v2/{repository}/tags/list", auth=ROOT)
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    return sorted(answer.json()["tags"] or [])


def catalog(client: httpx.Client, who: tuple[str, str] | None, n: int | None = None) -> list[str]:
    answer = client.get("/v2/_catalog", params={} if n is None else {"n": n}, auth=who)
    assert answer.status_code == 200, answer.text
    found: list[str] = answer.json()["repositories"]
    return found


def test_a_reader_can_pull_but_not_push_or_delete_and_nothing_changes(registry: httpx.Client) -> None:
    image = Image.random()
    with as_(registry, BOB) as bob:
        push_image(bob, "bob/app", image, "v1")
    expect(call(registry, "PATCH", "/repositories/bob/app", BOB, {"visibility": "public"}), 200)

    with as_(registry, CAROL) as carol:
        assert carol.get(f"/v2/bob/app/manifests/{image.digest}").status_code == 200
        assert carol.get(f"/v2/bob/app/blobs/{sha256(image.config)}").content == image.config
        other = Image.random()
        refused(carol.post("/v2/bob/app/blobs/uploads/"), 403)
        refused(carol.post("/v2/bob/app/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x"), 403)
        refused(
            carol.put(
                "/v2/bob/app/manifests/v1", content=other.manifest, headers={"Content-Type": other.media_type}
            ),
            403,
        )
        refused(carol.delete("/v2/bob/app/manifests/v1"), 403)
        refused(carol.delete(f"/v2/bob/app/manifests/{image.digest}"), 403)
        refused(carol.delete(f"/v2/bob/app/blobs/{sha256(image.config)}"), 403)
        # Mounting from a repository carol may read into one she may not write: refused too.
        refused(
            carol.post("/v2/bob/app/blobs/uploads/", params={"mount": image.digest, "from": "bob/app"}), 403
        )
    assert tags(registry, "bob/app") == ["v1"]
    assert registry.get("/v2/bob/app/manifests/v1", auth=ROOT).content == image.manifest
    assert registry.head(f"/v2/bob/app/blobs/{sha256(image.config)}", auth=ROOT).status_code == 200
    # No upload was opened for her: the writer's listing of the activity holds pushes only.
    log = expect(call(registry, "GET", "/activities?actor=carol", ROOT), 200)
    assert log["activities"] == []


def test_anonymous_clients_pull_public_repositories_only_and_push_nothing(registry: httpx.Client) -> None:
    image = Image.random()
    with as_(registry, BOB) as bob:
        push_image(bob, "bob/open", image, "v1")
        push_image(bob, "bob/closed", image, "v1")
    expect(call(registry, "PATCH", "/repositories/bob/open", BOB, {"visibility": "public"}), 200)
    with as_(registry, None) as anonymous:
        assert anonymous.get("/v2/bob/open/manifests/v1").status_code == 200
        closed = anonymous.get("/v2/bob/closed/manifests/v1")
        refused(closed, 401)
        challenge = closed.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="http://') and challenge.endswith(
            '/auth/token",service="wharf",scope="repository:bob/closed:pull"'
        ), challenge
        push = anonymous.post("/v2/bob/open/blobs/uploads/")
        refused(push, 401)
        # What the push needed, in Distribution's detail (the scope a token server will take).
        assert push.json()["errors"][0]["detail"] == [
            {"Type": "repository", "Name": "bob/open", "Action": "pull"},
            {"Type": "repository", "Name": "bob/open", "Action": "push"},
        ]
        refused(anonymous.delete("/v2/bob/open/manifests/v1"), 401)
        assert catalog(anonymous, None) == ["bob/open"]
    assert tags(registry, "bob/open") == ["v1"]


def test_a_push_creates_a_private_repository_in_the_pushers_namespace_only(registry: httpx.Client) -> None:
    image = Image.random()
    with as_(registry, CAROL) as carol:
        push_image(carol, "carol/mine", image, "v1")
        refused(carol.post("/v2/bob/theirs/blobs/uploads/"), 403)
        refused(carol.post("/v2/toplevel/blobs/uploads/"), 403)
    assert tags(registry, "bob/theirs") is None
    assert expect(call(registry, "GET", "/repositories/carol/mine", CAROL), 200)["visibility"] == "private"
    # bob may not see it: 404 on the API, 403 on /v2, absent from his catalog.
    with as_(registry, BOB) as bob:
        refused(bob.get("/v2/carol/mine/manifests/v1"), 403)
        refused(bob.get("/v2/carol/mine/tags/list"), 403)
    assert catalog(registry, BOB) == []
    assert catalog(registry, CAROL) == ["carol/mine"]
    assert catalog(registry, ROOT) == ["carol/mine"]


def test_the_catalog_pages_over_what_the_caller_may_read(registry: httpx.Client) -> None:
    image = Image.random()
    with as_(registry, BOB) as bob, as_(registry, CAROL) as carol:
        for name in ("a", "b", "c"):
            push_image(bob, f"bob/{name}", image, "v1")
            push_image(carol, f"carol/{name}", image, "v1")
    first = registry.get("/v2/_catalog", params={"n": 2}, auth=CAROL)
    assert first.json()["repositories"] == ["carol/a", "carol/b"]
    assert "last=carol%2Fb" in first.headers["link"]
    second = registry.get("/v2/_catalog", params={"n": 2, "last": "carol/b"}, auth=CAROL)
    assert second.json()["repositories"] == ["carol/c"]
    assert "link" not in second.headers
    assert len(catalog(registry, ROOT)) == 6


def test_jobs_and_garbage_collection_belong_to_administrators(registry: httpx.Client) -> None:
    gc_settings = "/admin/settings/registry/garbageCollection"
    shown = expect(call(registry, "GET", gc_settings, ROOT), 200)
    settings = {key: value for key, value in shown.items() if key not in ("nextRun", "started")}
    for who, status in ((BOB, 403), (None, 401)):
        for method, path, body in [
            ("POST", "/admin/jobs", DRY_RUN),
            ("GET", "/jobs", None),
            ("GET", gc_settings, None),
            ("PUT", gc_settings, {**settings, "schedule": "0 3 * * *"}),
            ("POST", f"{gc_settings}/schedule", {"schedule": "0 3 * * *"}),
            ("GET", f"{gc_settings}/lastSavings", None),
            ("GET", f"{gc_settings}/history", None),
        ]:
            expect(call(registry, method, path, who, body), status, "DENIED" if who else "UNAUTHORIZED")
    assert expect(call(registry, "GET", gc_settings, ROOT), 200)["schedule"] == settings["schedule"]
    jobs = expect(call(registry, "GET", "/jobs", ROOT), 200)["jobs"]
    assert "registryGC" not in {job["action"] for job in jobs}  # the refused start made none
    started = expect(
        call(registry, "POST", "/admin/jobs", ROOT, {"job": "registryGC", "parameters": {"dryRun": True}}),
        202,
    )
    assert started["createdBy"] == ROOT[0]
    expect(call(registry, "PUT", gc_settings, ROOT, {**settings, "schedule": "0 3 * * *"}), 200)
    # /metrics names no repository: open, for Prometheus.
    assert registry.get("/metrics").status_code == 200


def test_the_activity_log_names_the_real_actor_and_shows_others_doings_to_administrators(
    registry: httpx.Client,
) -> None:
    image = Image.random()
    with as_(registry, BOB) as bob:
        push_image(bob, "bob/app", image, "v1")
        assert bob.delete("/v2/bob/app/manifests/v1").status_code == 202
    expect(
        call(registry, "POST", "/admin/jobs", ROOT, {"job": "registryGC", "parameters": {"dryRun": True}}),
        202,
    )

    bobs = expect(call(registry, "GET", "/activities?actor=bob", ROOT), 200)["activities"]
    assert {"manifest.push", "tag.delete"} <= {event["action"] for event in bobs}
    assert {event["actor"] for event in bobs} == {"bob"}
    roots = expect(call(registry, "GET", "/activities?actor=root", ROOT), 200)["activities"]
    assert "job.start" in {event["action"] for event in roots}

    # bob sees his own doings and his repositories', not the administrator's.
    own = expect(call(registry, "GET", "/activities", BOB), 200)["activities"]
    assert own and {event["actor"] for event in own} == {"bob"}
    expect(call(registry, "GET", "/activities?actor=root", BOB), 403, "DENIED")
    expect(call(registry, "GET", "/activities?repository=bob/app", BOB), 200)
    expect(call(registry, "GET", "/activities?repository=bob/app", CAROL), 403, "DENIED")
    expect(call(registry, "GET", "/activities", None), 401, "UNAUTHORIZED")
