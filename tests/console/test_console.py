"""The console in-process: sign-in, CSRF, lockout, htmx fragments, CSV export, forms."""

from __future__ import annotations

import csv
import io
import re

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from tests.conftest import now

PASSWORD = "a long enough password"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert match, "every console form carries the CSRF token"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    page = await client.get("/console/login")
    return await client.post(
        "/console/login",
        data={
            "email": email,
            "password": password,
            "csrftoken": csrf_of(page.text),
            "next": "/console/customers",
        },
    )


@pytest.fixture
async def staff(session: AsyncSession, demo_data: None) -> None:
    """A support user and the demo customers; with usage only for tests marked ``demo_usage``."""
    await create_user(session, email="cs@example.com", role="support", password=PASSWORD, as_of=now())
    await session.commit()


async def test_console_requires_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/console/customers")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=/console/customers"


async def test_sign_in_sets_an_httponly_samesite_session(client: httpx.AsyncClient, staff: None) -> None:
    response = await sign_in(client, "CS@example.com", PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/customers"
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("tally_session="))
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    page = await client.get("/console/customers")
    assert page.status_code == 200
    assert "Acme Robotics" in page.text and "cs@example.com · support" in page.text


async def test_wrong_password_gives_a_generic_message_and_no_session(client: httpx.AsyncClient, staff: None) -> None:
    for email in ("cs@example.com", "nobody@example.com"):
        response = await sign_in(client, email, "wrong password!!")
        assert response.status_code == 401
        assert "Wrong email or password." in response.text
        assert not any(
            h.startswith("tally_session=") and "staff_id" in h for h in response.headers.get_list("set-cookie")
        )
        assert (await client.get("/console/customers")).status_code == 303


async def test_repeated_failures_lock_the_account(client: httpx.AsyncClient, staff: None) -> None:
    for _ in range(5):
        assert (await sign_in(client, "cs@example.com", "wrong password!!")).status_code == 401
    locked = await sign_in(client, "cs@example.com", PASSWORD)
    assert locked.status_code == 401, "even the right password is refused while locked"


async def test_console_posts_without_the_csrf_token_are_refused(client: httpx.AsyncClient, staff: None) -> None:
    await client.get("/console/login")
    forged = await client.post("/console/login", data={"email": "cs@example.com", "password": PASSWORD})
    assert forged.status_code == 403
    assert (await client.get("/console/customers")).status_code == 303
    await sign_in(client, "cs@example.com", PASSWORD)
    no_token = await client.post("/console/customers", data={"external_id": "x", "name": "X", "currency": "USD"})
    assert no_token.status_code == 403


async def test_live_search_renders_only_the_rows_block(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    fragment = await client.get("/console/customers", params={"search": "acme"}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<tbody id="customer-rows">')
    assert "<html" not in fragment.text
    assert "Acme Robotics" in fragment.text and "Globex" not in fragment.text
    assert "HX-Request" in fragment.headers["vary"]
    full = await client.get("/console/customers", params={"search": "acme"})
    assert "<html" in full.text and "Acme Robotics" in full.text, "a pushed URL renders the whole page"


async def test_customer_page_shows_the_overview(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    listing = await client.get("/console/customers", params={"search": "org_globex"})
    link = re.search(r'href="(/console/customers/[0-9a-f-]{36})"', listing.text)
    assert link
    page = await client.get(link.group(1))
    assert page.status_code == 200
    for text in ("Globex Analytics", "org_globex", "billing@globex.example", "Pro", "20.00 USD per month"):
        assert text in page.text
    missing = await client.get("/console/customers/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


async def test_customers_csv_export(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    response = await client.get("/console/customers.csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 25
    acme = next(row for row in rows if row["external_id"] == "org_acme")
    assert (acme["plan"], acme["plan_version"], acme["currency"]) == ("team", "1", "USD")


async def test_create_customer_form_shows_errors_beside_the_field(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/customers")
    token = csrf_of(page.text)
    taken = await client.post(
        "/console/customers",
        data={"external_id": "org_acme", "name": "Again", "currency": "USD", "csrftoken": token},
    )
    assert taken.status_code == 422
    assert "a customer with external id &#39;org_acme&#39; already exists" in taken.text
    created = await client.post(
        "/console/customers",
        data={
            "external_id": "org_new",
            "name": "New Co",
            "currency": "USD",
            "plan_key": "team",
            "csrftoken": token,
        },
    )
    assert created.status_code == 303
    assert "New Co" in (await client.get(created.headers["location"])).text


async def test_an_unknown_section_is_not_found(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    assert (await client.get("/console/nowhere")).status_code == 404


async def test_sign_out_ends_the_session(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/customers")
    await client.post("/console/logout", data={"csrftoken": csrf_of(page.text)})
    assert (await client.get("/console/customers")).status_code == 303


@pytest.mark.demo_usage
async def test_customer_page_shows_usage_cards_and_a_chart_that_htmx_swaps(
    client: httpx.AsyncClient, staff: None
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    listing = await client.get("/console/customers", params={"search": "org_acme"})
    link = re.search(r'href="(/console/customers/[0-9a-f-]{36})"', listing.text)
    assert link
    page = await client.get(link.group(1))
    assert "Usage this period" in page.text and "Active seats" in page.text
    wide, phone = page.text.split('<svg class="chart phone-chart"')
    assert '<svg class="chart wide-chart"' in wide and wide.count('class="bar"') == 30
    assert phone.count('class="bar"') == 30, "the same columns, drawn narrow for a phone"
    hourly = await client.get(
        link.group(1), params={"meter": "seats", "granularity": "HOUR"}, headers={"HX-Request": "true"}
    )
    assert hourly.text.lstrip().startswith('<section class="card" id="usage-chart">')
    assert hourly.text.count('class="bar"') == 2 * 48 and "<html" not in hourly.text


@pytest.mark.demo_usage
async def test_metering_page_quarantine_and_replay(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/metering")
    assert page.status_code == 200
    assert page.text.count("demo-newco-") == 3 and "UNKNOWN_CUSTOMER" in page.text
    exported = await client.get("/console/metering/quarantine.csv")
    assert len(list(csv.DictReader(io.StringIO(exported.text)))) == 3
    token = csrf_of(page.text)
    waiting = await client.post("/console/metering/replay", data={"csrftoken": token})
    assert waiting.status_code == 303 and "3 still waiting" in (await client.get(waiting.headers["location"])).text
    await client.post(
        "/console/customers",
        data={"external_id": "org_newco", "name": "NewCo", "currency": "USD", "plan_key": "hobby", "csrftoken": token},
    )
    replayed = await client.post("/console/metering/replay", data={"csrftoken": token})
    after = await client.get(replayed.headers["location"])
    assert "3 accepted" in after.text and "Nothing waiting." in after.text


async def customer_link(client: httpx.AsyncClient, external_id: str) -> str:
    listing = await client.get("/console/customers", params={"search": external_id})
    link = re.search(r'href="(/console/customers/[0-9a-f-]{36})"', listing.text)
    assert link
    return link.group(1)


async def test_grant_credits_with_a_confirmation_step_and_a_harmless_double_submit(
    client: httpx.AsyncClient, staff: None
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    base = await customer_link(client, "org_acme")
    page = await client.get(f"{base}/credits")
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert key
    form = {
        "csrftoken": csrf_of(page.text),
        "amount": "25.00",
        "reason": "outage apology",
        "expires_at": "2030-01-31",
        "priority": "10",
        "idempotency_key": key.group(1),
    }
    confirm = await client.post(f"{base}/grants/confirm", data=form)
    assert "Grant 25.00 USD to Acme Robotics?" in confirm.text
    first = await client.post(f"{base}/grants", data=form)
    second = await client.post(f"{base}/grants", data=form)
    assert first.status_code == second.status_code == 303
    credits = await client.get(first.headers["location"])
    assert "Granted 25.00 USD" in credits.text
    assert credits.text.count("outage apology") == 2, "one grant row and one ledger row, not two of each"
    too_much = await client.post(f"{base}/grants", data={**form, "amount": "150", "idempotency_key": "other"})
    assert too_much.status_code == 422 and "your role may grant at most 100.00 USD at once" in too_much.text


async def test_promotions_page_and_redeeming_from_the_customer_page(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/promotions")
    token = csrf_of(page.text)
    created = await client.post(
        "/console/promotions",
        data={
            "csrftoken": token,
            "code": "SPRING",
            "description": "Spring credit",
            "credit_amount": "15",
            "currency": "USD",
            "credit_expires_in_days": "60",
            "max_redemptions": "5",
        },
    )
    assert created.status_code == 303
    listed = await client.get("/console/promotions")
    assert "SPRING" in listed.text and "0 / 5" in listed.text
    base = await customer_link(client, "org_globex")
    redeemed = await client.post(
        f"{base}/redemptions", data={"csrftoken": token, "code": "spring", "idempotency_key": "r1"}
    )
    assert redeemed.status_code == 303
    assert "Redeemed spring: 15.00 USD" in (await client.get(redeemed.headers["location"])).text
    again = await client.post(
        f"{base}/redemptions", data={"csrftoken": token, "code": "spring", "idempotency_key": "r2"}
    )
    assert again.status_code == 422 and "already redeemed" in again.text
    listed = (await client.get("/console/promotions")).text
    assert "1 / 5" in listed and "org_globex" in listed, "who redeemed it is listed"
