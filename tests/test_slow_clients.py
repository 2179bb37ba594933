"""Slow and idle clients cannot take the registry down (issue 10, item 13): thousands of
connections that sent a blob upload's headers and withhold the body, or that send their
headers a byte a second, leave room for a normal push and pull, and the server closes them
once the configured timeouts pass. Beyond the bound on requests, refusal is a prompt 503."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest

from wharf.config import ConfigError, load_settings
from wharf.testing.slowclients import SlowClients, raise_fd_limit

from .conftest import stack_config
from .oci import Image, push_image, sha256
from .server import WharfServer

HELD_BODIES = 2000
SLOW_HEADERS = 100
# Short enough for a test, long enough that every attacker is still held while the push
# and pull run (checked below, so a busy machine makes the test fail loudly, not lie).
TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def _enough_descriptors() -> None:
    assert raise_fd_limit(HELD_BODIES + SLOW_HEADERS + 2048) >= HELD_BODIES + SLOW_HEADERS + 512


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "stack"),
    [("granian", "sqlite+filesystem"), ("uvicorn", "sqlite+filesystem"), ("granian", "postgresql+s3")],
)
def test_held_connections_leave_room_for_a_push_and_pull_and_time_out(
    request: pytest.FixtureRequest, make_server: Callable[..., WharfServer], kind: str, stack: str
) -> None:
    timeouts = {"header": f"{TIMEOUT:g}s", "idle": f"{TIMEOUT:g}s"}
    with stack_config(request, stack) as config:  # on S3 each held body has begun its object
        server = make_server({**config, "http": {"timeouts": timeouts}}, server=kind)
        held_connections(server)
        server.stop()  # before its database goes


def held_connections(server: WharfServer) -> None:
    image = Image.random(layers=2, size=256 * 1024)
    with SlowClients("127.0.0.1", server.port, body=HELD_BODIES, headers=SLOW_HEADERS) as attackers:
        assert attackers.refused == 0
        assert len(attackers.sockets) == HELD_BODIES + SLOW_HEADERS
        with httpx.Client(base_url=server.url, timeout=30) as client:
            began = time.monotonic()
            push_image(client, "slow/victim", image, tag="v1")
            manifest = client.get("/v2/slow/victim/manifests/v1", headers={"Accept": image.media_type})
            assert manifest.status_code == 200 and manifest.content == image.manifest
            for blob in image.blobs:
                got = client.get(f"/v2/slow/victim/blobs/{sha256(blob)}")
                assert got.status_code == 200 and got.content == blob
            took = time.monotonic() - began
        # The push and pull ran while every attacker was still held.
        let_go = attackers.wait_closed(time.monotonic())
        assert let_go == 0, f"{let_go} let go before the push and pull ended ({took:.1f}s): machine too busy?"

        closed = attackers.wait_closed(time.monotonic() + TIMEOUT + 60)
        assert closed == len(attackers.sockets), f"{len(attackers.sockets) - closed} connections still held"
        bodies = [attackers.received[i] for i in range(attackers.held_bodies)]
        timed_out = [answer for answer in bodies if answer.startswith(b"HTTP/1.1 408")]
        assert len(timed_out) == HELD_BODIES, {answer[:40] for answer in bodies}
    # The registry is its usual self afterwards.
    with server.client() as client:
        assert client.get("/v2/").status_code == 200


@pytest.mark.parametrize("kind", ["granian", "uvicorn"])
def test_requests_beyond_the_bound_are_refused_at_once(
    make_server: Callable[..., WharfServer], kind: str
) -> None:
    limit = 50
    config = {"http": {"maxrequests": limit, "maxconnections": 400, "timeouts": {"idle": "15s"}}}
    server = make_server(config, server=kind)
    with SlowClients("127.0.0.1", server.port, body=limit + 30) as attackers:
        # The 30 beyond the bound were answered 503 and closed, promptly; the rest are held.
        attackers.wait_closed(time.monotonic() + 10, at_least=30)
        answers = list(attackers.received.values())
        assert len(answers) == 30 and all(answer.startswith(b"HTTP/1.1 503") for answer in answers), answers
        began = time.monotonic()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            response = client.get("/v2/")
        assert response.status_code == 503 and time.monotonic() - began < 5
        assert response.headers["retry-after"] == "1"
        assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
        # Once the held bodies time out, there is room again.
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while client.get("/v2/").status_code != 200:
                assert time.monotonic() < deadline, "still refusing after the held bodies timed out"
                time.sleep(0.2)


def test_the_limits_are_checked_at_start_up() -> None:
    settings = load_settings(environ={})
    assert settings.http.timeouts.header_seconds == 30 and settings.http.timeouts.idle_seconds == 60
    assert settings.http.maxrequests <= settings.http.maxconnections
    for environ, message in [
        ({"WHARF_HTTP_TIMEOUTS_HEADER": "2m"}, "WHARF_HTTP_TIMEOUTS_HEADER: must be at most 60s"),
        ({"WHARF_HTTP_TIMEOUTS_IDLE": "0s"}, "WHARF_HTTP_TIMEOUTS_IDLE: must be longer than 0"),
        ({"WHARF_HTTP_MAXREQUESTS": "10", "WHARF_HTTP_MAXCONNECTIONS": "5"}, "maxrequests must not exceed"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(environ=environ)
