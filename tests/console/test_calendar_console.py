"""The console's trial controls in-process: the customer page shows the trial with its forms,
ending it goes through a review step that shows the invoice of its dry run (nothing issued yet),
then a confirmation that issues it once however often it is submitted."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from customers.service import NewCustomer, create_customer
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in


async def invoice_count(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM invoices"))).scalar_one())


async def test_a_trial_ended_from_the_console_after_reviewing_its_invoice(
    client: httpx.AsyncClient, session: AsyncSession, catalog: None
) -> None:
    await create_user(session, email="fin@example.com", role="finance", password=PASSWORD, as_of=now())
    new = NewCustomer(external_id="org_trial", name="Trial Inc", currency="USD", plan_key="pro", trial_days=14)
    customer_id = str((await create_customer(session, new, as_of=now())).id)
    await session.commit()
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{customer_id}")
    assert "Trial</dt><dd>until" in page.text and "End trial now" in page.text
    review = await client.post(
        f"/console/customers/{customer_id}/trial/end/review", data={"csrftoken": csrf_of(page.text)}
    )
    assert review.status_code == 200
    assert "Pro v1 base fee" in review.text and "20.00 USD" in review.text
    assert await invoice_count(session) == 0, "the review is a dry run"
    key = re.search(r'name="idempotency_key" value="([^"]+)"', review.text)
    assert key
    confirm = {"csrftoken": csrf_of(review.text), "idempotency_key": key.group(1)}
    first = await client.post(f"/console/customers/{customer_id}/trial/end", data=confirm)
    again = await client.post(f"/console/customers/{customer_id}/trial/end", data=confirm)
    assert first.status_code == again.status_code == 303
    assert "Trial%20ended:%20INV-" in first.headers["location"]
    assert await invoice_count(session) == 2, "the opening invoice and the trial's, once"
    after = await client.get(f"/console/customers/{customer_id}")
    assert "Trial</dt><dd>ended" in after.text and "End trial now" not in after.text
