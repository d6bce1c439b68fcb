"""The overview, invoices list, plans page and ledger view in-process, and every console page
rendering on an empty database and on the demo's."""

from __future__ import annotations

import csv
import html
import importlib
import io
import pkgutil
import re
import uuid
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

import console
from app.demo import load_demo
from app.staff import create_user
from console.charts import Tick, column_chart, duration_chart
from customers import service as customers
from ledger import service as ledger
from tests.conftest import graphql, now
from tests.console.test_console import PASSWORD, sign_in


@pytest.fixture
async def admin(session: AsyncSession) -> None:
    await create_user(session, email="fin@example.com", role="admin", password=PASSWORD, as_of=now())
    await session.commit()


@pytest.fixture
async def demo(admin: None, demo_data: None) -> None:
    """The demo's customers, invoices and grants; its month of usage only for tests marked
    ``demo_usage``."""


async def test_the_overview_is_the_landing_page(client: httpx.AsyncClient, demo: None) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    assert (await client.get("/console")).headers["location"] == "/console/overview"
    page = await client.get("/console/overview")
    assert page.status_code == 200, page.text
    assert 'href="/console/overview"' in page.text
    for heading in (
        "Monthly recurring revenue",
        "Revenue by month",
        "Receivables",
        "Credits outstanding",
        "Usage trend",
    ):
        assert heading in page.text
    attention = page.text[page.text.index('aria-label="Needs attention"') : page.text.index('id="mrr-title"')]
    assert "Collection is off" in attention, "without Stripe, no count of discrepancies that could not be found"
    assert "the ledger and Stripe disagree" not in attention


async def test_invoices_list_filters_totals_and_csv(client: httpx.AsyncClient, demo: None) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get("/console/invoices")
    assert page.status_code == 200, page.text
    numbers = re.findall(r'href="/console/invoices/(INV-\d+)"', page.text)
    assert numbers and numbers == sorted(numbers, reverse=True), "every number links to its invoice, newest first"
    acme = await client.get("/console/invoices", params={"customer": "acme", "status": "issued"})
    assert "Acme" in acme.text and "Globex" not in acme.text
    exported = await client.get("/console/invoices.csv", params={"customer": "acme", "status": "issued"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows and all(row["status"] == "ISSUED" and "acme" in row["customer_external_id"] for row in rows)
    total = sum(Decimal(row["total"]) for row in rows)
    assert f"{total:,}" in acme.text, "the totals are those of every matching invoice"
    refused = await client.get("/console/invoices", params={"min_total": "ten", "issued_from": "yesterday"})
    assert refused.status_code == 422
    assert "give an amount" in refused.text and "give a date" in refused.text
    reversed_range = await client.get("/console/invoices", params={"min_total": "5", "max_total": "1"})
    assert reversed_range.status_code == 422 and "must not be above the maximum" in reversed_range.text
    found = await client.get("/console/invoices", params={"number": numbers[0].lower()})
    assert found.status_code == 303 and found.headers["location"] == f"/console/invoices/{numbers[0]}"


async def test_ledger_view_runs_the_balance_in_sequence_and_links_causes(
    client: httpx.AsyncClient, session: AsyncSession, demo: None
) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    acme = (await customers.ids_by_external_id(session, ["org_acme"]))["org_acme"]
    owed = await ledger.balances(session, acme, "USD")
    for account, closing in (("receivable", owed.outstanding), ("credits", owed.credits)):
        exported = await client.get(f"/console/customers/{acme}/ledger.csv", params={"account": account})
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert rows, account
        sequences = [int(row["sequence"]) for row in rows]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
        balance = Decimal(0)
        for row in rows:
            debit, credit = Decimal(row["debit"]), Decimal(row["credit"])
            assert not (debit and credit)
            balance += (debit - credit) if account == "receivable" else (credit - debit)
            assert Decimal(row["balance"]) == balance
        assert balance == Decimal(closing) / 100, "the running balance ends at the account's balance"
        if account == "receivable":
            assert all(row["invoice"].startswith("INV-") for row in rows if row["kind"] == "invoice")
        else:
            assert rows[0]["grant_id"], "a grant links to the grant it created"
    page = await client.get(f"/console/customers/{acme}/ledger")
    assert page.status_code == 200
    assert re.search(r'href="/console/invoices/INV-\d+"', page.text)
    assert "Credits USD" in page.text and "Export CSV" in page.text


async def test_the_demo_has_an_overdue_invoice_to_show(client: httpx.AsyncClient, demo: None) -> None:
    """`make run`'s demo: Vandelay, billed three weeks ago, has not paid invoices due a week ago,
    so the Invoices page's overdue filter lists them and the overview ages them 1–30 days."""
    await sign_in(client, "fin@example.com", PASSWORD)
    listed = (await client.get("/console/invoices", params={"overdue": "1"})).text
    rows = re.findall(r'<td data-label="Number">.*?</tr>', listed, re.S)
    assert rows and all('<span class="exact">overdue</span>' in row for row in rows)
    assert {customer for row in rows for customer in re.findall(r'<span class="exact">(org_\w+)</span>', row)} == {
        "org_vandelay"
    }
    assert all('<span class="status status-issued">issued</span>' in row for row in rows)
    overview = (await client.get("/console/overview")).text
    start = overview.index('id="receivables"')
    receivables = overview[start : overview.index("</table>", start)]
    overdue = re.search(r'class="num overdue" data-label="Overdue"><a [^>]+>([\d,.]+)</a>', receivables)
    aged = re.search(r'data-label="1–30 days">([\d,.]+)<', receivables)
    assert overdue and aged and overdue.group(1) == aged.group(1) != "0.00", receivables


def console_get_routes() -> list[str]:
    """Every GET path of every console module's router."""
    paths = []
    for found in pkgutil.iter_modules(console.__path__):
        router = getattr(importlib.import_module(f"console.{found.name}"), "router", None)
        if router is not None:
            paths += [route.path for route in router.routes if "GET" in route.methods]
    return sorted(set(paths))


async def every_page_answers(client: httpx.AsyncClient, known: dict[str, str]) -> dict[str, tuple[int, bool]]:
    """Each console GET route with ``known`` path parameters (a real row's) or ones that name
    nothing; a page about nothing must say so (404), never fail. By URL: the status, and whether
    every parameter was a known one."""
    nothing = {"section": "no-such-section", "trace_id": "0" * 32, "position": "0", "reference": "INV-999999"}
    statuses = {}
    for path in console_get_routes():
        url, names = path, re.findall(r"{(\w+)(?::\w+)?}", path)
        for name in names:
            value = known.get(name) or nothing.get(name) or str(uuid.uuid4())
            url = re.sub(rf"{{{name}(?::\w+)?}}", value, url)
        response = await client.get(url)
        assert response.status_code < 500, f"{url}: {response.status_code}\n{response.text[:2000]}"
        assert "Unexpected error" not in response.text, url
        statuses[url] = (response.status_code, all(name in known for name in names))
    return statuses


async def test_every_console_page_renders_on_an_empty_database(client: httpx.AsyncClient, admin: None) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    statuses = await every_page_answers(client, {})
    for page in ("/console/overview", "/console/invoices", "/console/plans", "/console/customers"):
        assert statuses[page] == (200, True), page


@pytest.mark.demo_usage
async def test_every_console_page_renders_with_the_demo_data(
    client: httpx.AsyncClient, session: AsyncSession, demo: None
) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    acme = (await customers.ids_by_external_id(session, ["org_acme"]))["org_acme"]
    statuses = await every_page_answers(
        client, {"customer_id": str(acme), "reference": "INV-000001", "external_id": "org_acme"}
    )
    refused = {url: status for url, (status, known) in statuses.items() if known and status >= 400}
    assert not refused, "pages of rows that exist open"


def test_a_duration_chart_keeps_one_unit_and_round_ticks() -> None:
    chart = duration_chart("lag", ["10:00", "11:00", "12:00"], {"p99": ("p99", [900, 95_000, None])})
    assert chart.unit == "seconds", "95 s peaks above two seconds, not two minutes"
    assert [tick.label for tick in chart.y_ticks] == ["0", "50", "100"]
    assert [point.tooltip for point in chart.series[0].points] == [
        "p99, 10:00: 0.9 seconds",
        "p99, 11:00: 95.0 seconds",
    ]
    assert len(chart.series[0].segments) == 1, "no value, no point"
    assert [tick.label for tick in nice_ticks_of(Decimal("4231.50"))] == ["0", "2,000", "4,000", "6,000"]


def nice_ticks_of(peak: Decimal) -> list[Tick]:
    return column_chart("revenue", ["Dec"], [peak], unit="USD", tooltips=["Dec"]).y_ticks


@pytest.mark.demo_usage
async def test_usage_lines_explain_their_amount(client: httpx.AsyncClient, demo: None) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    listed = await client.get("/console/invoices", params={"customer": "org_acme"})
    newest = re.findall(r'href="/console/invoices/(INV-\d+)"', listed.text)[0]
    page = await client.get(f"/console/invoices/{newest}")
    explained = [html.unescape(text) for text in re.findall(r'<span class="explanation">([^<]+)</span>', page.text)]
    shares = []
    for line in explained:
        found = re.fullmatch(
            r"(?:([\d,]+) of )?([\d,]+) (\w+), ([\d,]+) included, ([\d,]+) × ([\d.]+) = ([\d.,]+)"
            r"(?:, raised to the minimum [\d.,]+)?(?:; this part's share = ([\d.,]+))?",
            line,
        )
        if found:
            part, quantity, _, included, billable, price, amount, share = found.groups()
            number = [Decimal(text.replace(",", "")) for text in (quantity, included, billable, price, amount)]
            assert number[0] - number[1] == number[2] and number[2] * number[3] == number[4], line
            assert (part is None) == (share is None), line
            if share:
                assert len(share.partition(".")[2]) <= 2, f"a share is shown as billed, in cents: {line}"
                shares.append(Decimal(share.replace(",", "")))
    assert any("included" in line for line in explained), explained
    assert any("this part's share" in line for line in explained), "premium requests are split by model"


async def test_a_customer_token_lists_its_own_invoices_and_sees_no_overview(
    client: httpx.AsyncClient, demo: None, token_for
) -> None:  # type: ignore[no-untyped-def]
    token = await token_for("customer", "org_acme")
    listed = await graphql(
        client,
        token,
        "{ invoiceList(first: 100) { edges { node { customerExternalId } } totals { currency invoices } } }",
    )
    found = listed.json()["data"]["invoiceList"]
    assert {edge["node"]["customerExternalId"] for edge in found["edges"]} == {"org_acme"}
    assert sum(total["invoices"] for total in found["totals"]) == len(found["edges"])
    for query in ("{ financeOverview { openAnomalies } }", "{ planVersions { subscriptions } }"):
        refused = (await graphql(client, token, query)).json()
        assert refused["data"] is None and refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    bad = (
        await graphql(client, token, '{ invoiceList(filter: {minTotal: "5", maxTotal: "1"}) { totals { currency } } }')
    ).json()
    assert bad["errors"][0]["extensions"] == {"code": "INVALID", "field": "minTotal"}


async def test_overdue_invoices_are_flagged_filtered_and_aged(
    client: httpx.AsyncClient, session: AsyncSession, admin: None
) -> None:
    """The demo as loaded 50 days ago: its invoices were due 14 days after issue, so every unpaid
    one is 36 days overdue today. The list marks and filters them, the CSV says so, and the
    overview's receivables show them overdue, aged 31–60 days."""
    await load_demo(session, as_of=now() - timedelta(days=50), with_usage=False)
    await session.commit()
    unpaid = (
        await session.execute(
            text(
                "SELECT count(*) FROM invoices WHERE status = 'issued' AND currency = 'USD' "
                "AND coalesce(due_at, issued_at) < now()"
            )
        )
    ).scalar_one()
    assert unpaid > 0, "the demo leaves invoices unpaid"
    await sign_in(client, "fin@example.com", PASSWORD)
    filters = {"status": "issued", "overdue": "1", "currency": "USD"}
    listed = (await client.get("/console/invoices", params=filters)).text
    rows = re.findall(r'<td data-label="Number">.*?</tr>', listed, re.S)
    assert len(rows) == min(unpaid, 50) and all('<span class="exact">overdue</span>' in row for row in rows)
    exported = await client.get("/console/invoices.csv", params=filters)
    flagged = [row["overdue"] for row in csv.DictReader(io.StringIO(exported.text))]
    assert len(flagged) == unpaid and set(flagged) == {"yes"}
    overview = (await client.get("/console/overview")).text
    start = overview.index('id="receivables"')
    receivables = overview[start : overview.index("</table>", start)]
    overdue = re.search(r'class="num overdue" data-label="Overdue"><a [^>]+>([\d,.]+)</a>', receivables)
    aged = re.search(r'data-label="31–60 days">([\d,.]+)<', receivables)
    assert overdue and aged and overdue.group(1) == aged.group(1) != "0.00", receivables
