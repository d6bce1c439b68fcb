"""GraphiQL and the API docs work in a browser that can reach nothing but Tally."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Route, expect

from tests.conftest import admin_execute, clone_database
from tests.e2e.conftest import screenshot_both_sizes, server_env, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def development_server(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = clone_database(server_url, "tally_offline_ide")
    data_dir = tmp_path_factory.mktemp("offline-ide")
    process, base_url = start_server({**server_env(url, data_dir), "TALLY_ENV": "development"}, data_dir / "serve.log")
    yield base_url
    process.terminate()
    process.wait(timeout=20)
    admin_execute(server_url, "DROP DATABASE IF EXISTS tally_offline_ide WITH (FORCE)")


def test_graphiql_and_the_api_docs_render_offline(development_server: str, browser) -> None:
    elsewhere: list[str] = []

    def only_tally(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.route("**/*", only_tally)
    page = context.new_page()
    page.goto(f"{development_server}/graphql")
    expect(page.locator(".graphiql-container .graphiql-query-editor")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Welcome to GraphiQL")).to_be_visible()
    screenshot_both_sizes(page, "graphiql-offline")
    page.goto(f"{development_server}/docs")
    expect(page.locator(".swagger-ui .information-container .title")).to_contain_text("Tally", timeout=20_000)
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    screenshot_both_sizes(page, "api-docs-offline")
    context.close()
    assert elsewhere == [], "the pages asked for nothing outside Tally"
