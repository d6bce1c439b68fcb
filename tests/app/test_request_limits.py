"""Bodies are bounded per route before the application reads them; database failures, timeouts
and unexpected errors are answered in JSON with a code; /healthz and /readyz ask the database."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings

BODY_LIMITED_PATHS = {
    "/graphql": "graphql_max_body_bytes",
    "/webhooks/stripe": "webhook_max_body_bytes",
    "/console/login": "login_max_body_bytes",
    "/console/customers": "max_body_bytes",
    "/v1/events": "events_max_body_bytes",
}


@pytest.mark.parametrize(("path", "setting"), BODY_LIMITED_PATHS.items())
async def test_a_declared_body_over_its_routes_limit_is_refused_before_it_is_read(
    client: httpx.AsyncClient, settings: Settings, path: str, setting: str
) -> None:
    limit = getattr(settings, setting)
    response = await client.post(path, content=b"x" * (limit + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "BODY_TOO_LARGE"
    assert str(limit) in response.json()["message"]


@pytest.mark.parametrize(("path", "setting"), BODY_LIMITED_PATHS.items())
async def test_an_undeclared_body_is_counted_as_it_arrives(
    client: httpx.AsyncClient, settings: Settings, path: str, setting: str
) -> None:
    limit = getattr(settings, setting)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024

    response = await client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "BODY_TOO_LARGE"


async def test_a_body_within_its_limit_reaches_the_application(client: httpx.AsyncClient, token_for) -> None:
    token = await token_for("admin")
    query = {"query": "{ __typename }", "padding": "x" * 100_000}  # over the default limit, under GraphQL's

    async def chunked() -> AsyncIterator[bytes]:
        yield json.dumps(query).encode()

    for content in (json.dumps(query).encode(), chunked()):
        response = await client.post(
            "/graphql",
            content=content,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_nul_in_the_url_is_a_coded_400_not_a_500(client: httpx.AsyncClient, token_for) -> None:
    token = await token_for("admin")
    for url in ("/v1/customers/org%00x", "/v1/customers/org_x/entitlements/requests?x=%00"):
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 400, url
        assert response.json()["code"] == "INVALID_INPUT"


@contextlib.contextmanager
def customers_locked(database_url: str) -> Iterator[None]:
    """Another transaction holds the customers table: every read of it waits."""
    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        yield
        holder.rollback()


async def app_with(settings: Settings, database_url: str, **changes: object) -> FastAPI:
    return create_app(settings.model_copy(update=changes), database_url)


async def test_a_statement_past_the_statement_timeout_is_a_json_503(
    settings: Settings, database_url: str, token_for
) -> None:
    token = await token_for("admin")
    application = await app_with(settings, database_url, statement_timeout_seconds=0.3)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http,
    ):
        await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})  # the token is known
        with customers_locked(database_url):
            response = await http.get("/v1/customers/org_x", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.json()["code"] == "DATABASE_TIMEOUT"
    assert response.headers["retry-after"]


async def test_a_request_past_the_request_timeout_is_a_json_503(
    settings: Settings, database_url: str, token_for
) -> None:
    token = await token_for("admin")
    application = await app_with(settings, database_url, request_timeout_seconds=0.3, statement_timeout_seconds=30)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http,
    ):
        await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        with customers_locked(database_url):
            started = asyncio.get_running_loop().time()
            response = await http.get("/v1/customers/org_x", headers={"Authorization": f"Bearer {token}"})
            assert asyncio.get_running_loop().time() - started < 5
    assert response.status_code == 503
    assert response.json()["code"] == "REQUEST_TIMEOUT"


async def test_an_unexpected_failure_is_a_json_500_with_a_trace_id_and_no_details(
    client: httpx.AsyncClient, token_for, database_url: str
) -> None:
    """A real fault: the schema no longer matches the code (a table renamed behind its back)."""
    token = await token_for("admin")
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("ALTER TABLE customers RENAME TO customers_elsewhere")
    try:
        response = await client.get("/v1/customers/org_x", headers={"Authorization": f"Bearer {token}"})
    finally:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("ALTER TABLE customers_elsewhere RENAME TO customers")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "INTERNAL"
    assert len(body["traceId"]) == 32 and body["traceId"] in body["message"]
    assert "customers" not in response.text and "SELECT" not in response.text


async def test_healthz_and_readyz_ask_the_database(client: httpx.AsyncClient, database_url: str) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "database": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0001'")
    outdated = await client.get("/readyz")
    assert outdated.status_code == 503
    assert outdated.json()["code"] == "SCHEMA_OUTDATED"
    assert (await client.get("/healthz")).status_code == 200, "alive, only not ready"


async def test_healthz_is_503_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    """A database URL nothing listens on (the outage of a running server is tested end to end)."""
    unreachable = f"postgresql+psycopg:///tally?host={tmp_path}&port=1"
    settings = Settings(database_url=unreachable, data_dir=tmp_path, env="test", tracing=False, secret_key="s" * 32)
    application = create_app(settings, unreachable)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http,
    ):
        for path in ("/healthz", "/readyz"):
            response = await http.get(path)
            assert response.status_code == 503, path
            assert response.json()["code"] == "DATABASE_UNAVAILABLE"
        api = await http.get("/v1/customers/org_x", headers={"Authorization": "Bearer tly_unknown"})
        assert api.status_code == 503
        assert api.json()["code"] == "DATABASE_UNAVAILABLE"
        assert api.headers["retry-after"]
