"""Customer URLs take the external id too: it redirects to the canonical URL (the internal id),
sub-pages and query included; an unknown one is the usual "No such customer"."""

from __future__ import annotations

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from customers.service import NewCustomer, create_customer
from tests.conftest import now
from tests.console.test_console import PASSWORD, sign_in


async def test_an_external_id_in_a_customer_url_leads_to_the_customer(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_user(session, email="cs@example.com", role="support", password=PASSWORD, as_of=now())
    new = NewCustomer(external_id="org_acme", name="Acme Robotics", currency="USD")
    acme = (await create_customer(session, new, as_of=now())).id
    await session.commit()
    await sign_in(client, "cs@example.com", PASSWORD)

    page = await client.get("/console/customers/org_acme")
    assert (page.status_code, page.headers["location"]) == (307, f"/console/customers/{acme}")
    followed = await client.get("/console/customers/org_acme", follow_redirects=True)
    assert followed.status_code == 200 and "Acme Robotics" in followed.text

    invoices = await client.get("/console/customers/org_acme/invoices?status=open")
    assert invoices.headers["location"] == f"/console/customers/{acme}/invoices?status=open"

    by_id = await client.get(f"/console/customers/{acme}")
    assert by_id.status_code == 200 and "Acme Robotics" in by_id.text, "the canonical URL answers itself"

    for unknown in ("/console/customers/org_nobody", "/console/customers/org_nobody/payments"):
        missing = await client.get(unknown)
        assert missing.status_code == 404 and "No such customer" in missing.text, unknown
