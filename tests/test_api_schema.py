"""The admin API against its own OpenAPI document: schemathesis generates requests for every
operation (valid ones, and ones the document forbids) and sends them to a throwaway
`wharf serve`; no answer may be a 5xx, and every answer must be one the document declares,
in status, content type and body."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .accounts import ACCOUNTS, add_user
from .conftest import STACKS, stack_config
from .oci import Image, error_codes, push_image
from .server import WharfServer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Examples per operation: 50 operations, each stack and mode in about 25 s here.
EXAMPLES = 15


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("stack", STACKS)
def test_admin_api_answers_as_its_openapi_document_says(
    request: pytest.FixtureRequest, make_server, stack: str, mode: GenerationMode
):
    # The fuzzer deletes and starts jobs: a registry of this test's own, with no worker running them.
    with stack_config(request, stack) as config:
        server: WharfServer = make_server({**config, "jobs": {"enabled": False}})
        try:
            fuzz_admin_api(server, mode)
        finally:
            server.stop()  # before its database goes


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_admin_api_answers_as_documented_to_a_user_who_may_not_do_everything(
    make_server, mode: GenerationMode
):
    """With accounts on, as a signed-in user who is no administrator: the refusals (403, 404
    for what they may not see) are answers the document declares too, and never a 5xx."""
    server: WharfServer = make_server({**ACCOUNTS, "jobs": {"enabled": False}})
    add_user(server.database_url, "fuzz", "fuzz-password")
    fuzz_admin_api(server, mode, ("fuzz", "fuzz-password"))


def fuzz_admin_api(server: WharfServer, mode: GenerationMode, auth: tuple[str, str] | None = None) -> None:
    with server.client(auth=auth) as client:
        push_image(client, "fuzz/app", Image.random(layers=1, size=64), tag="v1")
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v0/openapi.json")
    base_url = f"{server.url}/api/v0"
    assert urlsplit(base_url).netloc == f"127.0.0.1:{server.port}"

    failures: list[str] = []
    operations = 0
    with requests.Session() as session:
        session.auth = auth
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=30)

            try:
                fuzz()
            except Unsatisfiable:  # nothing the document forbids fits in this operation's request
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as error:
                failures.append(f"--- {operation.label}:\n{error}")
    assert operations >= 50  # the DTR accounts, teams, repositories and team access among them
    assert not failures, "\n".join(failures)


def test_refusals_the_fuzzer_found_are_errors_in_the_registry_shape(client):
    # An offset beyond 64 bits was a 500 (the database driver overflowed).
    huge = client.get("/api/v0/jobs", params={"start": 2**64})
    assert huge.status_code == 400 and error_codes(huge) == ["INVALID_JSON"]
    assert "start" in huge.json()["errors"][0]["message"]
    # A body that is not JSON, and a path no route takes, were FastAPI's and Starlette's own shapes.
    garbled = client.post(
        "/api/v0/admin/jobs", content=b"\xff{", headers={"Content-Type": "application/json"}
    )
    assert garbled.status_code == 400 and error_codes(garbled) == ["INVALID_JSON"]
    nowhere = client.delete("/api/v0/repositories/a%0Ab/c")
    assert nowhere.status_code == 404 and error_codes(nowhere) == ["NOT_FOUND"]
    assert nowhere.headers["content-type"] == "application/json"
