"""The console's billing pages in-process: a customer's Invoices tab, the invoice page, the CSV of
invoices, the plan-change preview and confirmation, and the Pricing simulation page."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from app.staff import create_user
from customers.service import NewCustomer, create_customer
from tests.conftest import DEMO_CATALOG, now
from tests.console.test_console import PASSWORD, csrf_of, sign_in


@pytest.fixture
async def billed(
    session: AsyncSession, catalog: None, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> str:
    """Staff of each role, and a Pro customer who started 40 days ago, billed as the run does
    today: an opening invoice and the one closing its first period. Returns the customer's id."""
    for email, role in (("cs@example.com", "support"), ("fin@example.com", "finance"), ("ro@example.com", "viewer")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    started = now() - timedelta(days=40)
    customer = await create_customer(
        session,
        NewCustomer(external_id="org_billed", name="Billed Inc", currency="USD", plan_key="pro", started_at=started),
        as_of=started,
    )
    await session.commit()
    await run_billing(sessions, settings, as_of=now())
    return str(customer.id)


def invoice_numbers(html: str) -> list[str]:
    return re.findall(r'<a href="/console/invoices/(INV-\d{6})">', html)


async def test_invoices_tab_shows_balance_subscription_upcoming_and_issued_invoices(
    client: httpx.AsyncClient, billed: str
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    overview = await client.get(f"/console/customers/{billed}")
    assert f'href="/console/customers/{billed}/invoices"' in overview.text, "a third tab"
    page = await client.get(f"/console/customers/{billed}/invoices")
    assert page.status_code == 200
    html = page.text
    assert 'aria-current="page">Invoices</a>' in html
    closing, opening = invoice_numbers(html)  # newest first
    assert int(closing.removeprefix("INV-")) == int(opening.removeprefix("INV-")) + 1
    assert html.count("20.00 USD") >= 2 and html.count('class="status status-issued"') == 2
    assert 'Pro <span class="muted">(pro, version 1)</span>' in html and "Current period" in html
    outstanding = re.search(r"<h3>Outstanding</h3><p>([^<]+)</p>", html)
    assert outstanding and outstanding.group(1) == "40.00 USD", "both invoices are owed"
    upcoming = html[html.index('id="upcoming-invoice"') : html.index("Issued invoices")]
    assert "Pro v1 base fee" in upcoming and "Credits that would apply" in upcoming
    assert "base fee · service" in upcoming and "exact 20" in upcoming
    assert (await client.get("/console/customers/00000000-0000-0000-0000-000000000000/invoices")).status_code == 404


async def test_more_invoices_come_by_keyset_paging_and_htmx_appends_only_rows(
    client: httpx.AsyncClient, billed: str
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    first_page = await client.get(f"/console/customers/{billed}/invoices", params={"first": 1})
    [newest] = invoice_numbers(first_page.text)
    more = re.search(r'<tr id="invoices-more">.*?hx-get="([^"]+)"', first_page.text, re.S)
    assert more, "a page with more invoices ends in a 'more' row"
    url = more.group(1).replace("&amp;", "&")
    rows = await client.get(url, headers={"HX-Request": "true"})
    assert rows.text.lstrip().startswith("<tr>") and "<html" not in rows.text
    [older] = invoice_numbers(rows.text)
    assert older != newest and 'id="invoices-more"' not in rows.text, "the last page has no 'more' row"
    without_js = await client.get(url)
    assert "<html" in without_js.text and invoice_numbers(without_js.text) == [older]
    assert "Newest invoices" in without_js.text


async def test_invoice_page_shows_lines_totals_and_ledger_transactions(
    client: httpx.AsyncClient, billed: str, session: AsyncSession
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    tab = await client.get(f"/console/customers/{billed}/invoices")
    opening = min(invoice_numbers(tab.text))
    page = await client.get(f"/console/invoices/{opening}")
    assert page.status_code == 200
    html = page.text
    assert f"<h1>Invoice {opening}</h1>" in html and 'class="status status-issued">ISSUED' in html
    assert f'<a href="/console/customers/{billed}/invoices">Billed Inc</a>' in html
    lines = html[html.index("<h2>Lines</h2>") : html.index("<h2>Ledger transactions</h2>")]
    assert "Pro v1 base fee" in lines and "base fee · service" in lines
    assert re.search(
        r'<td class="num" data-label="Quantity">1</td>\s*<td class="num" data-label="Unit price">20</td>', lines
    ), "quantity and unit price"
    assert "20.00 USD" in lines and 'class="exact"' in lines
    assert "awaiting payment" in html
    issued_in = (
        await session.execute(text("SELECT trace_id FROM invoices WHERE number = :n"), {"n": int(opening[4:])})
    ).scalar_one()
    if issued_in:  # tracing is on when an earlier test of this process installed a tracer provider
        assert f'<dt>Issued in</dt><dd><a href="/console/traces/{issued_in}">' in html
    else:
        assert '<dt>Issued in</dt><dd>— <span class="muted">(issued with tracing off)</span>' in html
    ledger = html[html.index("<h2>Ledger transactions</h2>") :]
    assert "<code>invoice</code>" in ledger and "20.00 USD" in ledger
    by_digits = await client.get(f"/console/invoices/{int(opening.removeprefix('INV-'))}")
    assert by_digits.status_code == 200 and f"Invoice {opening}" in by_digits.text
    invoice_id = re.search(r"<dt>Invoice id</dt><dd><code>([^<]+)</code>", html)
    assert invoice_id
    assert f"Invoice {opening}" in (await client.get(f"/console/invoices/{invoice_id.group(1)}")).text
    for unknown in ("INV-999999", "00000000-0000-0000-0000-000000000000", "nonsense"):
        missing = await client.get(f"/console/invoices/{unknown}")
        assert missing.status_code == 404 and "No such invoice" in missing.text


async def test_invoice_lookup_replaces_the_placeholder(client: httpx.AsyncClient, billed: str) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/invoices")
    assert page.status_code == 200 and "arrive with issue" not in page.text
    found = await client.get("/console/invoices", params={"number": "inv-000001"})
    assert found.status_code == 303 and found.headers["location"] == "/console/invoices/INV-000001"
    missing = await client.get("/console/invoices", params={"number": "INV-424242"})
    assert missing.status_code == 404 and "No invoice INV-424242" in missing.text


async def test_invoices_csv_export(client: httpx.AsyncClient, billed: str) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    response = await client.get(f"/console/customers/{billed}/invoices.csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="invoices-org_billed.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["kind"] for row in rows] == ["period", "opening"], "newest first, by number"
    assert all((row["currency"], row["total"], row["amount_due"]) == ("USD", "20.00", "20.00") for row in rows)
    assert all(row["status"] == "ISSUED" and row["number"].startswith("INV-") for row in rows)


async def plan_change_form(client: httpx.AsyncClient, customer_id: str) -> dict[str, str]:
    page = await client.get(f"/console/customers/{customer_id}/invoices")
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert key, "the form carries a key made when it was rendered"
    return {"csrftoken": csrf_of(page.text), "idempotency_key": key.group(1)}


async def test_plan_change_preview_changes_nothing_and_confirm_changes_the_plan(
    client: httpx.AsyncClient, billed: str, session: AsyncSession
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    form = {**await plan_change_form(client, billed), "plan_key": "team", "effective": "IMMEDIATELY"}
    preview_url = f"/console/customers/{billed}/plan-change/preview"
    fragment = await client.post(preview_url, data=form, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section class="card" id="plan-change">')
    assert "<html" not in fragment.text and "Confirm change" in fragment.text
    prorations = re.findall(r"<tr><td>([^<]+)</td>\s*<td class=\"num\">(-?[\d.]+) USD", fragment.text)
    assert len(prorations) == 2, prorations
    assert prorations[0][1].startswith("-") and not prorations[1][1].startswith("-"), "a credit, then a charge"
    assert (await session.execute(text("SELECT count(*) FROM plan_changes"))).scalar_one() == 0

    without_js = await client.post(preview_url, data=form)
    assert "<html" in without_js.text and "Confirm change" in without_js.text and "Upcoming invoice" in without_js.text
    assert (await session.execute(text("SELECT count(*) FROM plan_changes"))).scalar_one() == 0

    confirm = {
        name: re.search(rf'name="{name}" value="([^"]*)"', fragment.text.split('action="/console/customers/')[-1])
        for name in ("plan_key", "effective", "at", "idempotency_key")
    }
    assert all(confirm.values())
    confirmed = {"csrftoken": form["csrftoken"], **{name: m.group(1) for name, m in confirm.items() if m}}
    assert confirmed["idempotency_key"] == form["idempotency_key"] and confirmed["at"]
    first = await client.post(f"/console/customers/{billed}/plan-change", data=confirmed)
    second = await client.post(f"/console/customers/{billed}/plan-change", data=confirmed)
    assert first.status_code == second.status_code == 303, "a double submit is harmless"
    tab = await client.get(first.headers["location"])
    assert "Plan changed to Team v1" in tab.text
    assert 'Team <span class="muted">(team, version 1)</span>' in tab.text
    assert (await session.execute(text("SELECT count(*) FROM plan_changes"))).scalar_one() == 1
    upcoming = tab.text[tab.text.index('id="upcoming-invoice"') : tab.text.index("Issued invoices")]
    assert "proration · service" in upcoming, "the prorations land on the upcoming invoice"
    audit = tab.text[tab.text.index('id="plan-changes"') : tab.text.index('id="upcoming-invoice"')]
    assert "cs@example.com" in audit and "Pro v1" in audit and "Team v1" in audit and "immediately" in audit


async def test_plan_change_errors_are_shown_beside_the_field(client: httpx.AsyncClient, billed: str) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    form = {**await plan_change_form(client, billed), "plan_key": "pro", "effective": "IMMEDIATELY"}
    same = await client.post(f"/console/customers/{billed}/plan-change/preview", data=form)
    assert same.status_code == 422
    assert '<span class="field-error">the customer is already on pro version 1</span>' in same.text
    assert "Confirm change" not in same.text
    htmx = await client.post(
        f"/console/customers/{billed}/plan-change/preview", data=form, headers={"HX-Request": "true"}
    )
    assert htmx.status_code == 200, "htmx swaps only 2xx answers"
    assert "already on pro" in htmx.text and "<html" not in htmx.text
    unknown = await client.post(f"/console/customers/{billed}/plan-change", data={**form, "plan_key": "platinum"})
    assert unknown.status_code == 422 and "field-error" in unknown.text and "platinum" in unknown.text


async def test_a_viewer_sees_no_plan_change_form(client: httpx.AsyncClient, billed: str) -> None:
    await sign_in(client, "ro@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{billed}/invoices")
    assert page.status_code == 200 and "Your role may not change plans." in page.text
    assert "plan-change/preview" not in page.text


async def test_pricing_page_simulates_a_draft_catalog(client: httpx.AsyncClient, billed: str) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get("/console/pricing")
    assert page.status_code == 200 and 'aria-current="page">Pricing</a>' in page.text
    assert 'name="periods" min="1" max="24" value="3"' in page.text
    draft = DEMO_CATALOG.read_text().replace('base_fee = "20.00"', 'base_fee = "30.00"')
    token = csrf_of(page.text)
    result = await client.post("/console/pricing", data={"csrftoken": token, "catalog": draft, "periods": "3"})
    assert result.status_code == 200
    html = result.text
    results = html[html.index('id="simulation-results"') :]
    assert "1 customer re-rated" in results
    assert re.search(
        r"<td>USD</td><td class=\"num\">20.00</td><td class=\"num\">30.00</td>\s*<td class=\"num up\">10.00</td>",
        results,
    )
    assert '<svg class="chart distribution"' in results and results.count('class="bar ') == 6
    assert "above +20%: 1 customer(s)" in results
    assert 'Billed Inc <span class="muted">org_billed</span>' in results and "50.0%" in results

    fragment = await client.post(
        "/console/pricing",
        files={"catalog_file": ("draft.toml", draft.encode(), "application/toml")},
        data={"csrftoken": token, "catalog": "", "periods": "3"},
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )
    assert fragment.text.lstrip().startswith('<div id="simulation">') and "<html" not in fragment.text
    assert "1 customer re-rated" in fragment.text, "an uploaded file is simulated like a pasted catalog"
    assert "base_fee = &#34;30.00&#34;" in fragment.text, "the uploaded catalog fills the textarea"

    exported = await client.post(
        "/console/pricing.csv", data={"csrftoken": token, "catalog": draft, "periods": "3", "from": "", "to": ""}
    )
    assert exported.headers["content-type"].startswith("text/csv")
    [row] = list(csv.DictReader(io.StringIO(exported.text)))
    assert (row["external_id"], row["current"], row["simulated"], row["difference"], row["change_percent"]) == (
        "org_billed",
        "20.00",
        "30.00",
        "10.00",
        "50.0",
    )
    since = (now() - timedelta(days=60)).date().isoformat()
    by_dates = await client.post(
        "/console/pricing", data={"csrftoken": token, "catalog": draft, "periods": "", "from": since, "to": ""}
    )
    assert by_dates.status_code == 200 and "1 customer re-rated" in by_dates.text


async def test_pricing_page_lists_catalog_errors_per_path(client: httpx.AsyncClient, billed: str) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    token = csrf_of((await client.get("/console/pricing")).text)
    broken = DEMO_CATALOG.read_text().replace('interval = "month"', 'interval = "fortnight"', 1)
    refused = await client.post("/console/pricing", data={"csrftoken": token, "catalog": broken, "periods": "3"})
    assert refused.status_code == 422
    errors = re.findall(r"<li><code>([^<]+)</code>: ([^<]+)</li>", refused.text)
    assert [path for path, _ in errors] == ["plans[0].interval"], errors
    assert 'id="simulation-results"' not in refused.text
    assert "fortnight" in refused.text, "the draft stays in the textarea to be fixed"
    file_without_js = await client.post(
        "/console/pricing", data={"csrftoken": token, "catalog": "", "catalog_file": "draft.toml", "periods": "3"}
    )
    assert file_without_js.status_code == 422 and "to upload draft.toml, turn JavaScript on" in file_without_js.text
    empty = await client.post("/console/pricing", data={"csrftoken": token, "catalog": " ", "periods": "3"})
    assert empty.status_code == 422 and "paste a draft catalog or choose a TOML file" in empty.text
    too_many = await client.post(
        "/console/pricing", data={"csrftoken": token, "catalog": DEMO_CATALOG.read_text(), "periods": "99"}
    )
    assert too_many.status_code == 422
    assert re.search(
        r'name="periods"[^>]*value="99">\s*<span class="field-error">must be between 1 and 24', too_many.text
    )


async def test_support_may_not_simulate_pricing(client: httpx.AsyncClient, billed: str) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/pricing")
    assert "Your role may not simulate pricing" in page.text
    assert 'id="simulate-button"' not in page.text, "no form the role may not use"
