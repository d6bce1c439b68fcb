"""A running server's Traces page: the roller's polling leaves no trace, stray SQL shows only when
asked for; and its Reconciliation page without Stripe says collection is off."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, screenshot_both_sizes
from tests.e2e.test_billing_console import signed_in_page

pytestmark = pytest.mark.e2e


def stray_sql_of_the_roller(server: LiveServer) -> int:
    with psycopg.connect(server.database_url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM spans WHERE parent_span_id IS NULL AND kind = 'CLIENT' "
            "AND attributes->>'db.statement' LIKE '%usage_pending%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_traces_page_shows_requests_and_jobs_and_stray_sql_on_demand(live_server: LiveServer, browser) -> None:
    time.sleep(3)  # the roller polls every half second; spans reach the store within a second or two
    assert stray_sql_of_the_roller(live_server) == 0, "a roller go that found nothing leaves no trace"
    marker = f"SELECT stray_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(live_server.database_url) as connection:
        connection.execute(
            "INSERT INTO spans (trace_id, span_id, name, kind, status, start_time, duration_us, attributes, events, "
            "links) VALUES (%s, %s, %s, 'CLIENT', 'UNSET', now(), 120, '{}', '[]', '[]')",
            (uuid.uuid4().hex, uuid.uuid4().hex[:16], marker),
        )

    page = signed_in_page(browser, live_server)
    page.click("nav >> text=Traces")
    page.wait_for_url("**/console/traces")
    expect(page.locator("#trace-rows tr").first).to_be_visible()
    assert marker not in page.inner_text("#trace-rows")
    page.check("input[name=show]")
    expect(page.locator("#trace-rows")).to_contain_text(marker, timeout=10_000)
    assert "show=all" in page.url, "the choice is in the address bar"
    screenshot_both_sizes(page, "traces-all")

    page.click("nav >> text=Reconciliation")
    page.wait_for_url("**/console/reconciliation")
    expect(page.locator("#collection-off")).to_contain_text("Collection is off")
    assert "agree" not in page.inner_text("main")
    expect(page.get_by_role("button", name="Run now")).to_have_count(0)
    screenshot_both_sizes(page, "reconciliation-collection-off")
    page.close()
