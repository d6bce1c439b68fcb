"""The hosted page's pay button: shown when collection is on and the invoice's PaymentIntent still
waits for the customer (here: the card needs 3-D Secure), with that PaymentIntent's client secret
for Stripe.js; gone once paid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.invoice_documents import create_link
from app.jobs import collect_invoices
from app.main import create_app
from app.settings import Settings
from tests.billing.scenario import JAN_31
from tests.billing.stripe_support import CARD_NEEDS_AUTHENTICATION, LocalStripe, billed_with_card


async def hosted_page(settings: Settings, database_url: str, path: str) -> httpx.Response:
    app: FastAPI = create_app(settings, database_url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.get(path)


async def test_an_invoice_awaiting_authentication_offers_the_customer_a_pay_button_with_the_intent_s_client_secret(
    session: AsyncSession, sessions: Any, settings: Settings, database_url: str, localstripe: LocalStripe
) -> None:
    _, configured = await billed_with_card(
        session, sessions, settings, "org_authenticates", CARD_NEEDS_AUTHENTICATION, localstripe
    )
    await collect_invoices(sessions, configured, as_of=JAN_31 + timedelta(minutes=2))
    invoice_id, intent = (
        await session.execute(
            text("SELECT a.invoice_id, a.payment_intent_id FROM payment_attempts a WHERE a.status = 'requires_action'")
        )
    ).one()
    secret = localstripe.client().v1.payment_intents.retrieve(intent).client_secret
    link = create_link(configured, invoice_id, days=3, as_of=datetime.now(UTC))

    without_key = await hosted_page(configured, database_url, f"/i/{link.token}")
    assert without_key.status_code == 200 and 'id="pay"' not in without_key.text, "no publishable key: no button"

    online = configured.model_copy(update={"stripe_publishable_key": "pk_test_tally"})
    page = await hosted_page(online, database_url, f"/i/{link.token}")
    assert page.status_code == 200
    assert 'id="pay"' in page.text and "Pay now · $10.00" in page.text
    assert f'data-client-secret="{secret}"' in page.text and 'data-publishable-key="pk_test_tally"' in page.text
    assert '<script src="https://js.stripe.com/v3/"></script>' in page.text
    assert "https://js.stripe.com" in page.headers["content-security-policy"]

    hurried = online.model_copy(update={"stripe_timeout_seconds": 0.5, "stripe_max_network_retries": 0})
    with localstripe.stopped():  # Stripe hangs: the invoice still shows, without the button
        hanging = await hosted_page(hurried, database_url, f"/i/{link.token}")
    assert hanging.status_code == 200 and 'id="pay"' not in hanging.text
    assert "Online payment is not available for this invoice" in hanging.text and "$10.00" in hanging.text

    await session.execute(text("UPDATE payment_attempts SET status = 'succeeded'"))
    await session.commit()
    paid = await hosted_page(online, database_url, f"/i/{link.token}")
    assert 'id="pay"' not in paid.text, "nothing left to pay online"
