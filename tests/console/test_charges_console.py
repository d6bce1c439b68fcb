"""The console's one-off charges and commitments in-process: the summary on the customer page, a
charge and a commitment through their review step (the dry run's amounts) to confirmation,
a double confirm charging once, a refusal beside its field, a cancel, a minimum spend."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from customers.service import NewCustomer, create_customer
from ledger.grants import grant_credits
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in


@pytest.fixture
async def customer(session: AsyncSession, catalog: None) -> str:
    for email, role in (("fin@example.com", "finance"), ("cs@example.com", "support")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    found = await create_customer(
        session,
        NewCustomer(external_id="org_console", name="Console Co", currency="USD", plan_key="pro"),
        as_of=now(),
    )
    await grant_credits(
        session,
        customer_id=found.id,
        currency="USD",
        amount=2500,
        reason="welcome",
        actor="test",
        idempotency_key="welcome",
        as_of=now(),
    )
    await session.commit()
    return str(found.id)


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def form_key(html: str, action: str) -> dict[str, str]:
    start = html.index(f'action="{action}"')
    form = html[start : html.index("</form>", start)]
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form)
    assert key
    return {"csrftoken": csrf_of(html), "idempotency_key": key.group(1)}


async def test_a_charge_is_reviewed_with_its_amounts_then_confirmed_once(
    client: httpx.AsyncClient, customer: str, session: AsyncSession
) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    overview = await client.get(f"/console/customers/{customer}")
    assert f'hx-get="/console/customers/{customer}/charges"' in overview.text, "the summary, fetched by htmx"
    summary = await client.get(f"/console/customers/{customer}/charges", headers={"HX-Request": "true"})
    assert summary.text.lstrip().startswith('<section class="card" id="charges-summary">')
    assert "<html" not in summary.text

    page = await client.get(f"/console/customers/{customer}/charges")
    fields = form_key(page.text, f"/console/customers/{customer}/charges/review")
    charge = {"description": "Setup fee", "quantity": "2", "unit_price": "25.005", "when": "NOW"}
    review = await client.post(f"/console/customers/{customer}/charges/review", data={**fields, **charge})
    assert review.status_code == 200
    # 2 x 25.005 = 50.01; the customer's 25.00 of credits apply; 25.01 is due.
    assert "Charge Console Co 50.01 USD?" in review.text
    assert "<dt>Credits that would apply</dt><dd>25.00 USD</dd>" in review.text
    assert "<dt>Amount due</dt><dd>25.01 USD</dd>" in review.text
    assert (await session.execute(text("SELECT count(*) FROM one_off_charges"))).scalar_one() == 0

    confirm = hidden_fields(review.text)
    first = await client.post(f"/console/customers/{customer}/charges", data=confirm)
    second = await client.post(f"/console/customers/{customer}/charges", data=confirm)
    assert first.status_code == second.status_code == 303
    assert "Charged 50.01 USD on invoice INV-" in unquote(first.headers["location"])
    assert (await session.execute(text("SELECT count(*) FROM one_off_charges"))).scalar_one() == 1
    listed = await client.get(unquote(first.headers["location"]))
    assert "Setup fee" in listed.text and 'class="status status-invoiced"' in listed.text

    bad = await client.post(
        f"/console/customers/{customer}/charges/review",
        data={**fields, **charge, "quantity": "0", "idempotency_key": "n"},
    )
    assert bad.status_code == 422 and '<span class="field-error">must be greater than zero</span>' in bad.text


async def test_a_pending_charge_is_canceled_and_a_commitment_and_a_minimum_are_set(
    client: httpx.AsyncClient, customer: str, session: AsyncSession
) -> None:
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{customer}/charges")
    fields = form_key(page.text, f"/console/customers/{customer}/charges/review")
    charge = {"description": "Training day", "quantity": "1", "unit_price": "800", "when": "NEXT_INVOICE"}
    review = await client.post(f"/console/customers/{customer}/charges/review", data={**fields, **charge})
    assert "on the customer's next invoice" in review.text
    made = await client.post(f"/console/customers/{customer}/charges", data=hidden_fields(review.text))
    assert "on the next invoice" in unquote(made.headers["location"])
    listed = await client.get(unquote(made.headers["location"]))
    summary = listed.text[listed.text.index('id="charges-summary"') :]
    assert "Training day (800.00 USD)" in summary[: summary.index("</section>")]

    action = re.search(r'action="(/console/customers/[^"]+/cancel)"', listed.text)
    assert action
    cancel_key = form_key(listed.text, action.group(1))
    canceled = await client.post(action.group(1), data={**cancel_key, "reason": "booked twice"})
    assert canceled.status_code == 303 and "Canceled Training day" in unquote(canceled.headers["location"])
    again = await client.post(action.group(1), data={**cancel_key, "reason": "booked twice"})
    assert again.status_code == 303, "the same key cancels once"
    status = (await session.execute(text("SELECT status, cancel_reason FROM one_off_charges"))).one()
    assert tuple(status) == ("canceled", "booked twice")

    ends = (datetime.now(UTC) + timedelta(days=90)).date().isoformat()
    fields = form_key(listed.text, f"/console/customers/{customer}/commitments/review")
    review = await client.post(
        f"/console/customers/{customer}/commitments/review",
        data={**fields, "amount": "300", "ends_at": ends, "priority": "10", "starts_at": ""},
    )
    assert review.status_code == 200 and "Commit Console Co to 300.00 USD?" in review.text
    assert f"<dt>Expires</dt><dd>{ends} 00:00:00 UTC" in review.text
    committed = await client.post(f"/console/customers/{customer}/commitments", data=hidden_fields(review.text))
    assert committed.status_code == 303 and "Committed 300.00 USD, invoice INV-" in unquote(
        committed.headers["location"]
    )
    page = await client.get(unquote(committed.headers["location"]))
    assert "300.00 of 300.00 USD left, to " + ends in page.text

    fields = form_key(page.text, f"/console/customers/{customer}/minimum-spend")
    minimum = await client.post(
        f"/console/customers/{customer}/minimum-spend", data={**fields, "amount": "99", "reason": "contract"}
    )
    assert minimum.status_code == 303 and "Minimum spend set to 99.00 USD" in unquote(minimum.headers["location"])
    page = await client.get(unquote(minimum.headers["location"]))
    assert '99.00 USD per period <span class="muted">(subscription)</span>' in page.text


async def test_support_may_look_but_not_charge(client: httpx.AsyncClient, customer: str) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{customer}/charges")
    assert page.status_code == 200
    assert "/charges/review" not in page.text and "Review charge" not in page.text, "no form support may not use"
    refused = await client.post(
        f"/console/customers/{customer}/charges/review",
        data={"csrftoken": csrf_of(page.text), "description": "x", "quantity": "1", "unit_price": "1", "when": "NOW"},
    )
    assert refused.status_code == 400 and "Forbidden" in refused.text
