"""Paid top-ups, auto-recharge and the low-balance alert: credits are granted once the purchase's
invoice is paid, exactly once whether the collection worker or Stripe's webhook reports the
payment first (a real localstripe), never for a failed payment; auto-recharge keeps one purchase
in flight under concurrent checks and never passes its monthly cap; ``credits.balance_low`` fires
once per crossing; and hostile input writes nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from strawberry.utils.str_converters import to_camel_case

from app.api.topups import CreditBalance
from app.collection import stripe_gateway
from app.credit_balances import check_credit_balances
from app.jobs import collect_invoices, process_stripe_events
from app.settings import Settings
from billing.collection.customers import stripe_customer_id
from billing.collection.outbox import charge, claim_next, payer_of
from billing.collection.outcomes import Attempt, Paid, record_outcome, settle_payment
from billing.collection.stripe_gateway import Charge
from billing.credits import balance as credit_balance
from billing.credits import topups
from billing.invoices import collection_state
from customers.service import NewCustomer, create_customer
from ledger import service as ledger
from ledger.errors import InvalidInput
from ledger.grants import consume_credits, grant_credits
from ledger.verify import verify
from tests.billing.stripe_support import CARD_DECLINED, CARD_SUCCEEDS, LocalStripe, card_for, event_of, signed
from tests.conftest import graphql, now

PURCHASE = """mutation($i: PurchaseCreditsInput!) { purchaseCredits(input: $i) {
  purchase { id status origin amount { amount currency } priority expiresInDays invoice { kind status } }
  invoice { id amountDue { amount } lines { kind description } } userErrors { field code message } } }"""
SETTINGS = """mutation($i: SetCreditBalanceSettingsInput!) { setCreditBalanceSettings(input: $i) {
  creditBalance { credits { amount } lowBalanceThreshold { amount } balanceLow
    autoRecharge { enabled threshold { amount } amount { amount } monthlyCap { amount } rechargedThisMonth { amount } } }
  recharge { status origin amount { amount } } userErrors { field code message } } }"""
BALANCE = """query($id: ID!) { customer(id: $id) { creditBalance { credits { amount } balanceLow }
  creditPurchases { edges { node { status origin amount { amount } } } } } }"""


async def new_customer(session: AsyncSession, external_id: str) -> uuid.UUID:
    customer = await create_customer(
        session, NewCustomer(external_id=external_id, name=external_id, currency="USD"), as_of=now()
    )
    await session.commit()
    return customer.id


def request(customer_id: uuid.UUID, amount: str = "25.00", key: str = "buy-1", **more: Any) -> topups.PurchaseRequest:
    return topups.PurchaseRequest(
        customer_id=customer_id, amount=Decimal(amount), currency="USD", idempotency_key=key, actor="test", **more
    )


async def grants_of(session: AsyncSession, customer_id: uuid.UUID) -> list[tuple[Any, ...]]:
    rows = await session.execute(
        text(
            "SELECT amount, priority, source, expires_at IS NOT NULL FROM credit_grants WHERE customer_id = :c "
            "ORDER BY created_at"
        ),
        {"c": customer_id},
    )
    return [tuple(row) for row in rows]


async def credits(session: AsyncSession, customer_id: uuid.UUID) -> int:
    return (await ledger.balances(session, customer_id, "USD")).credits


async def with_card(session: AsyncSession, settings: Settings, localstripe: LocalStripe, name: str, card: str) -> Any:
    customer_id = await new_customer(session, name)
    configured = localstripe.settings(settings)
    gateway = stripe_gateway(configured)
    assert gateway is not None
    stripe_customer = await stripe_customer_id(session, gateway, customer_id, as_of=now())
    await session.commit()
    card_for(localstripe, stripe_customer, card)
    return customer_id, configured


async def deliver_succeeded(
    app: httpx.AsyncClient, sessions: Any, configured: Settings, intent_id: str, invoice_id: uuid.UUID, attempt: int
) -> None:
    """Stripe's ``payment_intent.succeeded`` for the attempt, signed as Stripe signs it, then processed."""
    intent = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": 2500,
        "amount_received": 2500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"tally_invoice_id": str(invoice_id), "tally_attempt": str(attempt)},
    }
    payload = event_of("payment_intent.succeeded", intent, f"evt_{uuid.uuid4().hex[:8]}")
    response = await app.post(
        "/webhooks/stripe",
        content=payload,
        headers={"content-type": "application/json", "Stripe-Signature": signed(payload)},
    )
    assert response.status_code == 200
    assert await process_stripe_events(sessions, configured, as_of=now()) == 1


@pytest.mark.parametrize("webhook_first", [False, True])
async def test_a_paid_purchase_grants_its_credits_once_whoever_reports_the_payment(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    localstripe: LocalStripe,
    stripe_app: httpx.AsyncClient,
    webhook_first: bool,
) -> None:
    customer_id, configured = await with_card(
        session, settings, localstripe, f"org_buys_{webhook_first}", CARD_SUCCEEDS
    )
    outcome = await topups.purchase_credits(session, request(customer_id, priority=5, expires_in_days=30), as_of=now())
    await session.commit()
    assert outcome.invoice is not None and (outcome.invoice.kind, outcome.invoice.amount_due) == (
        "credit_purchase",
        2500,
    )
    assert await grants_of(session, customer_id) == [], "nothing is granted before the invoice is paid"
    if webhook_first:  # the worker charged the card, then crashed before recording; Stripe tells Tally first
        gateway = stripe_gateway(configured)
        assert gateway is not None
        claimed = await claim_next(session, as_of=now())
        assert claimed is not None
        await session.commit()
        payer = await payer_of(session, gateway, claimed, as_of=now())
        assert payer is not None
        await session.commit()
        charged = await charge(gateway, claimed, payer)
        await session.commit()
        assert charged.payment_intent_id is not None
        await deliver_succeeded(
            stripe_app, sessions, configured, charged.payment_intent_id, claimed.attempt.invoice_id, 1
        )
        assert not await record_outcome(session, claimed.attempt, charged, as_of=now(), retry_after=())
        await session.commit()
    else:
        assert await collect_invoices(sessions, configured, as_of=now()) == 1
        intent_id, invoice_id = (
            await session.execute(text("SELECT payment_intent_id, invoice_id FROM payment_attempts"))
        ).one()
        await deliver_succeeded(stripe_app, sessions, configured, intent_id, invoice_id, 1)  # late: nothing new
    assert await grants_of(session, customer_id) == [(2500, 5, "purchase", True)]
    assert await credits(session, customer_id) == 2500
    assert (await ledger.balances(session, customer_id, "USD")).outstanding == 0, "a paid top-up leaves nothing owed"
    status = await session.execute(
        text("SELECT p.status, i.status FROM credit_purchases p JOIN invoices i ON i.id = p.invoice_id")
    )
    assert tuple(status.one()) == ("paid", "paid")
    assert await verify(session) == []


async def test_a_declined_card_grants_nothing_and_dunns_no_one(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, localstripe: LocalStripe
) -> None:
    customer_id, configured = await with_card(session, settings, localstripe, "org_declined", CARD_DECLINED)
    await topups.purchase_credits(session, request(customer_id), as_of=now())
    await session.commit()
    assert await collect_invoices(sessions, configured, as_of=now()) == 1
    assert await collect_invoices(sessions, configured, as_of=now() + timedelta(days=30)) == 0, "no retries"
    assert await grants_of(session, customer_id) == []
    row = await session.execute(
        text(
            "SELECT p.status, p.failure IS NOT NULL, i.status, c.status FROM credit_purchases p "
            "JOIN invoices i ON i.id = p.invoice_id JOIN customers c ON c.id = p.customer_id"
        )
    )
    assert tuple(row.one()) == ("failed", True, "void", "ACTIVE")
    assert await collection_state.customers_with_failed_collection(session, customer_id) == 0, (
        "a failed top-up holds no one past due: nothing was owed"
    )
    assert await verify(session) == []


async def pay(session: AsyncSession, purchase_id: uuid.UUID, intent: str) -> None:
    """What the worker or the webhook does once Stripe says the purchase's invoice is paid."""
    invoice_id, amount = (
        await session.execute(
            text("SELECT invoice_id, amount FROM credit_purchases WHERE id = :id"), {"id": purchase_id}
        )
    ).one()
    assert await settle_payment(session, invoice_id, Paid(intent, None, amount, "USD", now()), as_of=now()) is None
    await session.commit()


async def spend(session: AsyncSession, customer_id: uuid.UUID, amount: int) -> None:
    await consume_credits(
        session,
        customer_id=customer_id,
        currency="USD",
        amount=amount,
        reason="an invoice",
        actor="billing",
        idempotency_key=f"spend:{uuid.uuid4()}",
        as_of=now(),
    )
    await session.commit()


async def recharges(session: AsyncSession, customer_id: uuid.UUID) -> list[tuple[Any, ...]]:
    rows = await session.execute(
        text(
            "SELECT id, status, amount FROM credit_purchases WHERE customer_id = :c AND origin = 'auto_recharge' "
            "ORDER BY created_at"
        ),
        {"c": customer_id},
    )
    return [tuple(row) for row in rows]


async def test_auto_recharge_keeps_one_in_flight_under_racing_checks_and_holds_the_monthly_cap(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    customer_id = await new_customer(session, "org_recharge")
    settings = credit_balance.BalanceSettingsRequest(
        customer_id=customer_id,
        currency="USD",
        actor="test",
        recharge_enabled=True,
        recharge_threshold=Decimal("10"),
        recharge_amount=Decimal("50"),
        recharge_monthly_cap=Decimal("120"),
        recharge_priority=7,
    )
    await credit_balance.set_balance_settings(session, settings, as_of=now())  # balance 0: the first recharge
    await session.commit()

    async def check() -> None:
        async with sessions() as own:
            await credit_balance.check_balance(own, customer_id, as_of=now())
            await own.commit()

    await asyncio.gather(*(check() for _ in range(8)), check_credit_balances(sessions, as_of=now()))
    [(first, status, amount)] = await recharges(session, customer_id)
    assert (status, amount) == ("awaiting_payment", 5000), "one recharge in flight, however many checks race"
    await pay(session, first, "pi_r1")
    await pay(session, first, "pi_r1")  # reported twice
    assert await grants_of(session, customer_id) == [(5000, 7, "purchase", False)]
    await spend(session, customer_id, 4500)  # 5.00 left: below 10.00
    await asyncio.gather(*(check() for _ in range(4)))
    second = [row for row in await recharges(session, customer_id) if row[0] != first]
    assert [row[1:] for row in second] == [("awaiting_payment", 5000)]
    await pay(session, second[0][0], "pi_r2")
    await spend(session, customer_id, 5000)  # 5.00 again; 100.00 recharged this month, cap 120.00
    check_result = await credit_balance.check_balance(session, customer_id, as_of=now())
    await session.commit()
    assert check_result is not None and check_result.recharge is None
    assert check_result.held_back is not None and "monthly cap" in check_result.held_back
    assert len(await recharges(session, customer_id)) == 2
    # A direct insert of a second in-flight recharge is refused by the database itself.
    await topups.purchase_credits(session, request(customer_id, "50", key="r3"), as_of=now(), origin="auto_recharge")
    with pytest.raises(InvalidInput, match="already awaits payment"):
        await topups.purchase_credits(
            session, request(customer_id, "50", key="r4"), as_of=now(), origin="auto_recharge"
        )
    await session.rollback()


async def test_a_failed_recharge_is_not_retried_every_tick(session: AsyncSession) -> None:
    customer_id = await new_customer(session, "org_recharge_fails")
    settings = credit_balance.BalanceSettingsRequest(
        customer_id=customer_id,
        currency="USD",
        actor="test",
        recharge_enabled=True,
        recharge_threshold=Decimal("10"),
        recharge_amount=Decimal("20"),
        recharge_monthly_cap=Decimal("1000"),
    )
    _, check = await credit_balance.set_balance_settings(session, settings, as_of=now())
    assert check is not None and check.recharge is not None
    await session.commit()
    invoice_id = check.recharge.invoice_id
    assert invoice_id is not None
    attempt = Attempt(invoice_id, customer_id, 1, 2000, "USD")
    await session.execute(
        text("UPDATE collection_outbox SET status = 'in_flight', attempts = 1 WHERE invoice_id = :i"), {"i": invoice_id}
    )
    declined = Charge("failed", "pi_declined", "card_declined")
    assert await record_outcome(session, attempt, declined, as_of=now(), retry_after=(timedelta(days=3),))
    await session.commit()
    again = await credit_balance.check_balance(session, customer_id, as_of=now())
    assert again is not None and again.recharge is None and "failed" in (again.held_back or "")
    later = await credit_balance.check_balance(session, customer_id, as_of=now() + timedelta(days=1, minutes=1))
    assert later is not None and later.recharge is not None, "the next day it tries again"
    await session.rollback()


async def balance_low_events(session: AsyncSession, customer_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT data FROM webhook_events WHERE type = 'credits.balance_low' AND customer_id = :c "
            "ORDER BY resource_version"
        ),
        {"c": customer_id},
    )
    return [row[0] for row in rows]


async def test_balance_low_fires_once_per_crossing_and_rearms_above(session: AsyncSession) -> None:
    customer_id = await new_customer(session, "org_low")
    await grant_credits(
        session,
        customer_id=customer_id,
        currency="USD",
        amount=3000,
        reason="welcome",
        actor="test",
        idempotency_key="welcome",
        as_of=now(),
    )
    settings = credit_balance.BalanceSettingsRequest(
        customer_id=customer_id, currency="USD", actor="test", low_balance_threshold=Decimal("20")
    )
    await credit_balance.set_balance_settings(session, settings, as_of=now())
    await session.commit()
    assert await balance_low_events(session, customer_id) == []
    await spend(session, customer_id, 1500)  # 15.00 < 20.00
    for _ in range(3):
        await credit_balance.check_balance(session, customer_id, as_of=now())
        await session.commit()
    [event] = await balance_low_events(session, customer_id)
    graphql_fields = {to_camel_case(f.name) for f in CreditBalance.__strawberry_definition__.fields}  # type: ignore[attr-defined]
    assert set(event) == graphql_fields - {"autoRecharge"}, "data is the CreditBalance type's fields"
    assert (event["credits"], event["lowBalanceThreshold"], event["balanceLow"], event["currency"]) == (
        1500,
        2000,
        True,
        "USD",
    )
    await grant_credits(
        session,
        customer_id=customer_id,
        currency="USD",
        amount=1000,
        reason="goodwill",
        actor="test",
        idempotency_key="goodwill",
        as_of=now(),
    )
    await credit_balance.check_balance(session, customer_id, as_of=now())  # 25.00: re-armed
    await spend(session, customer_id, 1000)  # 15.00: a second crossing
    await credit_balance.check_balance(session, customer_id, as_of=now())
    await credit_balance.check_balance(session, customer_id, as_of=now())
    await session.commit()
    assert [e["credits"] for e in await balance_low_events(session, customer_id)] == [1500, 1500]


@pytest.fixture
async def buyer(session: AsyncSession, token_for: Any) -> tuple[str, str, str]:
    customer_id = await new_customer(session, "org_hostile")
    await new_customer(session, "org_neighbour")
    return str(customer_id), await token_for("admin"), await token_for("customer", "org_hostile")


def purchase_input(customer_id: str, **changes: Any) -> dict[str, Any]:
    return {"i": {"customerId": customer_id, "amount": "25.00", "currency": "USD", "idempotencyKey": "k1", **changes}}


async def count(session: AsyncSession, table: str) -> int:
    return int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


HOSTILE_PURCHASES = [
    ({"amount": "-5"}, "amount", "INVALID"),
    ({"amount": "0"}, "amount", "INVALID"),
    ({"amount": "0.001"}, "amount", "INVALID"),
    ({"amount": "1000000"}, "amount", "INVALID"),
    ({"amount": "1e300"}, "amount", "INVALID"),
    ({"currency": "XXZ"}, "currency", "INVALID"),
    ({"currency": "EUR"}, "currency", "CURRENCY_MISMATCH"),
    ({"idempotencyKey": "k" * 256}, "idempotencyKey", "INVALID"),
    ({"idempotencyKey": "  "}, "idempotencyKey", "INVALID"),
    ({"priority": -1}, "priority", "INVALID"),
    ({"expiresInDays": 0}, "expiresInDays", "INVALID"),
    ({"expiresInDays": 100000}, "expiresInDays", "INVALID"),
]


async def test_hostile_purchases_are_refused_naming_the_field_and_write_nothing(
    client: httpx.AsyncClient, session: AsyncSession, buyer: tuple[str, str, str]
) -> None:
    customer_id, admin, _ = buyer
    for changes, field, code in HOSTILE_PURCHASES:
        body = (await graphql(client, admin, PURCHASE, purchase_input(customer_id, **changes))).json()
        [error] = body["data"]["purchaseCredits"]["userErrors"]
        assert (error["field"], error["code"]) == ([field], code), (changes, error)
    assert (await count(session, "credit_purchases"), await count(session, "invoices")) == (0, 0)


async def test_a_customer_buys_its_own_credits_once_per_key_and_never_anothers(
    client: httpx.AsyncClient, session: AsyncSession, buyer: tuple[str, str, str], token_for: Any
) -> None:
    customer_id, admin, own = buyer
    dry = (await graphql(client, own, PURCHASE, purchase_input(customer_id, dryRun=True))).json()["data"]
    assert (
        dry["purchaseCredits"]["purchase"]["status"] == "AWAITING_PAYMENT" and dry["purchaseCredits"]["invoice"] is None
    )
    assert await count(session, "credit_purchases") == 0, "a dry run writes nothing"
    racing = await asyncio.gather(*(graphql(client, own, PURCHASE, purchase_input(customer_id)) for _ in range(6)))
    payloads = [r.json()["data"]["purchaseCredits"] for r in racing]
    assert all(p["userErrors"] == [] for p in payloads)
    assert len({p["purchase"]["id"] for p in payloads}) == 1, "one purchase for one key, however many race"
    assert payloads[0]["purchase"]["invoice"] == {"kind": "credit_purchase", "status": "ISSUED"}
    assert payloads[0]["invoice"]["amountDue"]["amount"] == "25.00"
    assert payloads[0]["invoice"]["lines"] == [
        {"kind": "CREDIT_PURCHASE", "description": "Credits: 25.00 USD of credits"}
    ]
    assert (await count(session, "credit_purchases"), await count(session, "invoices")) == (1, 1)
    reused = (await graphql(client, own, PURCHASE, purchase_input(customer_id, amount="30"))).json()["data"]
    assert reused["purchaseCredits"]["userErrors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"
    neighbour = (
        await session.execute(text("SELECT id FROM customers WHERE external_id = 'org_neighbour'"))
    ).scalar_one()
    other = (await graphql(client, own, PURCHASE, purchase_input(str(neighbour), idempotencyKey="n"))).json()["data"]
    assert other["purchaseCredits"]["userErrors"][0]["code"] == "NOT_FOUND"
    viewer = await token_for("viewer")
    refused = (await graphql(client, viewer, PURCHASE, purchase_input(customer_id, idempotencyKey="v"))).json()
    assert refused["data"] is None or refused["data"]["purchaseCredits"] is None
    assert await count(session, "credit_purchases") == 1
    listed = (await graphql(client, admin, BALANCE, {"id": customer_id})).json()["data"]["customer"]
    assert listed["creditBalance"] == {"credits": {"amount": "0.00"}, "balanceLow": False}
    assert listed["creditPurchases"]["edges"] == [
        {"node": {"status": "AWAITING_PAYMENT", "origin": "REQUEST", "amount": {"amount": "25.00"}}}
    ]


HOSTILE_RECHARGES = [
    ({"enabled": True, "amount": "10", "monthlyCap": "100"}, "rechargeThreshold"),
    ({"enabled": True, "threshold": "5", "monthlyCap": "100"}, "rechargeAmount"),
    ({"enabled": True, "threshold": "5", "amount": "10"}, "rechargeMonthlyCap"),
    ({"enabled": True, "threshold": "5", "amount": "50", "monthlyCap": "20"}, "rechargeMonthlyCap"),
    ({"enabled": True, "threshold": "-1", "amount": "10", "monthlyCap": "100"}, "rechargeThreshold"),
    ({"enabled": True, "threshold": "5", "amount": "0", "monthlyCap": "100"}, "rechargeAmount"),
    ({"enabled": True, "threshold": "5", "amount": "1e40", "monthlyCap": "100"}, "rechargeAmount"),
    (
        {"enabled": True, "threshold": "5", "amount": "10", "monthlyCap": "100", "expiresInDays": -3},
        "rechargeExpiresInDays",
    ),
]


async def test_hostile_auto_recharge_settings_are_refused_and_write_nothing(
    client: httpx.AsyncClient, session: AsyncSession, buyer: tuple[str, str, str]
) -> None:
    customer_id, _, own = buyer
    for recharge, field in HOSTILE_RECHARGES:
        variables = {"i": {"customerId": customer_id, "currency": "USD", "autoRecharge": recharge}}
        body = (await graphql(client, own, SETTINGS, variables)).json()
        [error] = body["data"]["setCreditBalanceSettings"]["userErrors"]
        assert error["field"] == [field], (recharge, error)
    assert (await count(session, "credit_balance_settings"), await count(session, "credit_purchases")) == (0, 0)


async def test_enabling_auto_recharge_below_the_threshold_buys_at_once(
    client: httpx.AsyncClient, buyer: tuple[str, str, str]
) -> None:
    customer_id, _, own = buyer
    recharge = {"enabled": True, "threshold": "5", "amount": "20", "monthlyCap": "60"}
    variables = {"i": {"customerId": customer_id, "currency": "USD", "autoRecharge": recharge}}
    payload = (await graphql(client, own, SETTINGS, variables)).json()["data"]["setCreditBalanceSettings"]
    assert payload["userErrors"] == []
    assert payload["recharge"] == {
        "status": "AWAITING_PAYMENT",
        "origin": "AUTO_RECHARGE",
        "amount": {"amount": "20.00"},
    }
    balance = payload["creditBalance"]
    assert balance["lowBalanceThreshold"] == {"amount": "5.00"} and balance["balanceLow"] is True
    assert balance["autoRecharge"]["rechargedThisMonth"] == {"amount": "20.00"}
    again = (await graphql(client, own, SETTINGS, variables)).json()["data"]["setCreditBalanceSettings"]
    assert again["recharge"] is None, "the same settings again buy nothing more: one is in flight"
