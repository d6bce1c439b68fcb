"""What the Stripe tests share: a real localstripe server (a stateful Stripe stand-in from PyPI)
on a free port, cards saved as the frontend would save them, invoices issued and waiting to be
collected, and webhook events signed exactly as Stripe signs them, built from Stripe's own
published example objects (``shared/stripe/fixtures3.json``) where localstripe sends none."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import stripe
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.collection import stripe_gateway
from app.settings import Settings
from billing.collection.customers import stripe_customer_id
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, JAN_31, subscribe
from tests.conftest import SHARED
from tests.e2e.conftest import free_port

API_KEY = "sk_test_tally"
WEBHOOK_SECRET = "whsec_test_tally_endpoint_secret"
FIXTURES: dict[str, Any] = json.loads((SHARED / "stripe" / "fixtures3.json").read_text())["resources"]
CARD_SUCCEEDS = "4242424242424242"
CARD_DECLINED = "4000000000000341"
CARD_NEEDS_AUTHENTICATION = "4000002500003155"


@dataclass
class LocalStripe:
    base: str
    process: subprocess.Popen[bytes]

    def client(self) -> stripe.StripeClient:
        return stripe.StripeClient(API_KEY, base_addresses={"api": self.base})

    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={"stripe_api_key": API_KEY, "stripe_api_base": self.base, "stripe_webhook_secret": WEBHOOK_SECRET}
        )

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """localstripe frozen (SIGSTOP): connections are accepted and never answered, as when
        Stripe hangs; it answers again on leaving the block."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def flush(self) -> None:
        """Forget every object (for tests that look at the whole account, like reconciliation)."""
        httpx.delete(f"{self.base}/_config/data", headers={"Authorization": f"Bearer {API_KEY}"}).raise_for_status()

    def send_webhooks_to(self, url: str) -> None:
        httpx.post(
            f"{self.base}/_config/webhooks/tally",
            data={"url": url, "secret": WEBHOOK_SECRET},
            headers={"Authorization": f"Bearer {API_KEY}"},
        ).raise_for_status()


def start_localstripe(log_path: Path) -> LocalStripe:
    """A fresh localstripe: without --from-scratch it would load /tmp/localstripe.pickle, the
    objects of every other localstripe on the machine."""
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("localstripe")), "--port", str(port), "--from-scratch"],
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{base}/v1/customers", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=1)
            return LocalStripe(base, process)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def card_for(localstripe: LocalStripe, stripe_customer: str, number: str) -> str:
    """What the frontend does with a SetupIntent: a card saved to the Stripe customer, made the
    default for invoices."""
    client = localstripe.client()
    card = {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    method = client.v1.payment_methods.create(params={"type": "card", "card": card})  # type: ignore[typeddict-item]
    client.v1.payment_methods.attach(method.id, params={"customer": stripe_customer})
    client.v1.customers.update(stripe_customer, params={"invoice_settings": {"default_payment_method": method.id}})
    return method.id


async def billed_with_card(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    external_id: str,
    card: str | None,
    localstripe: LocalStripe,
) -> tuple[uuid.UUID, Settings]:
    """A Basic customer whose opening invoice (10.00) is issued, with a card saved (or none)."""
    configured = localstripe.settings(settings)
    await apply_catalog(session, CATALOG, as_of=JAN_31 - timedelta(days=1))
    await session.commit()
    customer_id = await subscribe(session, external_id, "basic", JAN_31)
    gateway = stripe_gateway(configured)
    assert gateway is not None
    stripe_customer = await stripe_customer_id(session, gateway, customer_id, as_of=JAN_31)
    await session.commit()
    if card:
        card_for(localstripe, stripe_customer, card)
    await run_billing(sessions, configured, as_of=JAN_31 + timedelta(minutes=1))
    return customer_id, configured


async def outbox_and_attempts(session: AsyncSession) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    outbox = (await session.execute(text("SELECT status, attempts, last_error FROM collection_outbox"))).all()
    attempts = (
        await session.execute(text("SELECT attempt, status, error FROM payment_attempts ORDER BY attempt"))
    ).all()
    return [tuple(r) for r in outbox], [tuple(r) for r in attempts]


async def customer_status(session: AsyncSession, customer_id: uuid.UUID) -> str:
    row = await session.execute(text("SELECT status FROM customers WHERE id = :id"), {"id": customer_id})
    return str(row.scalar_one())


async def invoice_status(session: AsyncSession) -> str:
    return str((await session.execute(text("SELECT status FROM invoices"))).scalar_one())


def signed(payload: bytes, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send: HMAC-SHA256 of "timestamp.payload"."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event_of(kind: str, obj: dict[str, Any], event_id: str = "evt_test_1", created: int | None = None) -> bytes:
    """A Stripe event of ``kind`` about ``obj``, in the shape of Stripe's example event."""
    event = copy.deepcopy(FIXTURES["event"])
    event.update({"id": event_id, "type": kind, "data": {"object": obj}})
    if created is not None:
        event["created"] = created
    return json.dumps(event).encode()


def fixture_with(resource: str, **changes: Any) -> dict[str, Any]:
    """Stripe's example ``resource`` with the fields that make it about a real Tally object."""
    obj = copy.deepcopy(FIXTURES[resource])
    obj.update(changes)
    return obj
