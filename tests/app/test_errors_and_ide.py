"""Unexpected errors are masked (with a trace id to quote); GraphiQL only in development."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from app.api import customers as customers_api
from app.main import create_app
from app.settings import Settings
from tests.conftest import graphql


async def test_an_unexpected_error_is_masked_and_logged(
    client: httpx.AsyncClient, token_for, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure is injected (no real fault is reachable on demand); masking is what is tested."""

    async def broken_search(*args: object, **kwargs: object) -> None:
        raise RuntimeError("connection string postgresql://secret@db leaked")

    monkeypatch.setattr(customers_api.customers, "search_customers", broken_search)
    token = await token_for("admin")
    with caplog.at_level(logging.ERROR, logger="tally.graphql"):
        response = await graphql(client, token, "{ customers { edges { node { id } } } }")
    error = response.json()["errors"][0]
    assert response.status_code == 200
    assert error["message"].startswith("Unexpected error; quote trace id")
    assert error["extensions"]["code"] == "INTERNAL"
    assert "secret" not in response.text
    assert any("unexpected error" in record.message for record in caplog.records)


async def test_graphiql_is_served_only_in_development(database_url: str, tmp_path: Path) -> None:
    for env, expected in (("development", 200), ("production", 404)):
        settings = Settings(database_url=database_url, data_dir=tmp_path, env=env, tracing=False, secret_key="s" * 32)
        application = create_app(settings, database_url)
        async with (
            application.router.lifespan_context(application),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http,
        ):
            page = await http.get("/graphql", headers={"Accept": "text/html"})
            assert page.status_code == expected, env
            if expected == 200:
                assert "graphiql" in page.text.lower()
