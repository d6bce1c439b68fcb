"""GraphiQL and the API docs load every script and style from Tally itself (static/vendor/), each
file the very one the page names (its integrity hash), so they work with no network."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.settings import Settings

ASSET = re.compile(r'(?:src|href)="([^"]+)"(?:\s+integrity="([^"]+)")?')


@pytest.fixture
async def development(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, data_dir=tmp_path, env="development", tracing=False)
    application = create_app(settings, database_url)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http,
    ):
        yield http


async def assets_of(http: httpx.AsyncClient, path: str) -> list[tuple[str, str | None]]:
    page = await http.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 200, path
    html = re.sub(r"<script>.*?</script>", "", page.text, flags=re.S)  # inline code names no assets
    return [
        (url, integrity)
        for url, integrity in ASSET.findall(re.sub(r"\s*\n\s*", " ", html))
        if not url.startswith("data:")
    ]


async def test_graphiql_and_the_api_docs_load_nothing_from_elsewhere(development: httpx.AsyncClient) -> None:
    graphiql = await assets_of(development, "/graphql")
    docs = await assets_of(development, "/docs")
    assert len(graphiql) == 7 and len(docs) == 3, (graphiql, docs)
    for url, integrity in graphiql + docs:
        assert url.startswith("/static/vendor/"), url
        served = await development.get(url)
        assert served.status_code == 200, url
        if integrity:
            digest = base64.b64encode(hashlib.sha384(served.content).digest()).decode()
            assert integrity == f"sha384-{digest}", f"{url} is not the file the page names"
    assert sum(1 for _, integrity in graphiql if integrity) == 7, "GraphiQL's files keep their integrity hashes"
