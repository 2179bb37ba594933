"""Two replicas on one PostgreSQL and one bucket agree on who may do what: an account or a
personal access token that stops working stops on every replica at once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wharf.meta import migrate

from .accounts import ACCOUNTS, add_token, add_user, store_call
from .meta import EVENT
from .postgres import create_database, drop_database
from .server import WharfServer, deep_merge


@pytest.fixture
def replicas(
    make_server: Callable[..., WharfServer], postgres_server: str, s3_server: Any
) -> Iterator[tuple[WharfServer, WharfServer]]:
    url = create_database(postgres_server)
    migrate.upgrade(url)
    config = deep_merge(
        {
            "database": {"url": url},
            "storage": {
                "s3": s3_server.storage_config(f"auth/{uuid.uuid4().hex}"),
                "redirect": {"disable": True},
            },
        },
        ACCOUNTS,
    )
    yield make_server(config), make_server(config)
    drop_database(postgres_server, url)


def test_a_revoked_token_and_a_deactivated_account_stop_on_the_other_replica(replicas):
    first, second = replicas
    add_user(first.database_url, "ci", "long enough password")
    token_id, secret = add_token(first.database_url, "ci")
    with first.client(auth=("ci", secret)) as one, second.client(auth=("ci", secret)) as two:
        assert one.get("/v2/").status_code == 200
        assert two.get("/v2/").status_code == 200

        async def revoke(store):
            assert await store.accounts.revoke_token("ci", token_id, EVENT)

        store_call(first.database_url, revoke)
        assert two.get("/v2/").status_code == 401
        assert one.get("/v2/").status_code == 401
    with (
        first.client(auth=("ci", "long enough password")) as one,
        second.client(auth=("ci", "long enough password")) as two,
    ):
        assert one.get("/v2/").status_code == 200 and two.get("/v2/").status_code == 200

        async def deactivate(store):
            await store.accounts.update_account("ci", EVENT, active=False)

        store_call(first.database_url, deactivate)
        # The second replica verified this password a moment ago (and remembers it did):
        # the account's row, read on every request, still decides.
        assert two.get("/v2/").status_code == 401


def test_replicas_sign_and_verify_with_the_one_key_kept_in_the_database(replicas):
    first, second = replicas
    add_user(first.database_url, "ci", "long enough password")
    scope = {"service": "wharf", "scope": "repository:ci/app:pull,push"}
    with first.client() as one, second.client() as two:
        # The first replica to sign generates the key and keeps it in the database; the
        # other reads that one rather than making its own.
        issued = one.get("/auth/token", params=scope, auth=("ci", "long enough password"))
        other = two.get("/auth/token", params=scope, auth=("ci", "long enough password"))
        assert issued.status_code == 200 and other.status_code == 200
        for token in (issued.json()["token"], other.json()["token"]):
            for replica in (one, two):
                answer = replica.get("/v2/ci/app/tags/list", headers={"Authorization": f"Bearer {token}"})
                # Verified (the account may read its own namespace): 404, the repository is
                # not there yet, rather than 401.
                assert answer.status_code == 404, answer.text
