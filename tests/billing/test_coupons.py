"""Coupons and discounts against the real database: what each invoice takes off (percent on the
whole invoice, fixed capped at the lines, on named meters only), for how many invoices (once, N
periods, forever) across several billing runs, reruns and races that never use a period twice,
redemption limits under 16 concurrent redeemers, expiry, and refusals that write nothing. Every
test ends with the ledger invariants checked (conftest)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import billing_window, run_billing
from app.database import in_transaction
from app.settings import Settings
from billing.discounts import coupons
from billing.discounts.coupons import NewCoupon
from billing.insights.accuracy import check_invoice
from billing.invoices.service import upcoming_invoice
from billing.invoices.simulation import PeriodSelection, simulate_pricing
from customers.service import NewCustomer, NewSubscription, add_subscription, create_customer
from ledger.errors import TallyError
from metering.service import ingest
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, FEB_28, JAN_31, LIMITS, MAR_31, invoices_of, lines_of, send_calls, subscribe
from tests.conftest import STORAGE_ADD_ON

FEB_10 = datetime(2026, 2, 10, tzinfo=JAN_31.tzinfo)
APR_30 = datetime(2026, 4, 30, tzinfo=JAN_31.tzinfo)
MAY_31 = datetime(2026, 5, 31, tzinfo=JAN_31.tzinfo)
CREATED = JAN_31 - timedelta(days=1)


async def make_coupon(session: AsyncSession, code: str, duration: str = "forever", **changes: object) -> uuid.UUID:
    fields: dict[str, object] = {"code": code, "name": "Launch offer", "duration": duration}
    coupon = await coupons.create_coupon(
        session,
        NewCoupon(**{**fields, **changes}),
        actor="staff:test",
        as_of=CREATED,  # type: ignore[arg-type]
    )
    await session.commit()
    return coupon.id


async def apply(session: AsyncSession, customer_id: uuid.UUID, code: str, key: str = "k1", *, at: datetime = CREATED):
    discount = await coupons.apply_coupon(
        session, customer_id=customer_id, currency="USD", code=code, idempotency_key=key, actor="staff:test", as_of=at
    )
    await session.commit()
    return discount


async def system_balance(session: AsyncSession, kind: str) -> int:
    found = await session.execute(
        text(
            "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = :kind AND a.customer_id IS NULL"
        ),
        {"kind": kind},
    )
    return int(found.scalar_one())


async def bill_through(sessions: async_sessionmaker[AsyncSession], settings: Settings, *moments: datetime) -> None:
    for moment in moments:
        await run_billing(sessions, settings, as_of=moment + timedelta(hours=1))


async def test_a_percentage_comes_off_the_whole_invoice_before_credits_and_is_posted_as_contra_revenue(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await make_coupon(session, "TWENTY", percent_off=Decimal("20"))
    await apply(session, customer_id, "twenty")  # codes ignore case
    await send_calls(session, "acme", 153, FEB_10)
    await bill_through(sessions, settings, JAN_31, FEB_28)

    opening, february = await invoices_of(session, customer_id)
    assert await lines_of(session, opening.id) == [
        ("base_fee", "Basic v1 base fee, 2026-01-31 to 2026-02-28", 1, 1000),
        ("discount", "Discount TWENTY: Launch offer, 20% off", None, -200),
    ]
    assert (opening.subtotal, opening.total, opening.amount_due) == (800, 800, 800)
    # 53 calls over the allowance at 0.10 = 5.30, and the next base fee 10.00: 15.30, 20% = 3.06.
    assert await lines_of(session, february.id) == [
        ("usage", "API calls (region=eu)", 153, 530),
        ("base_fee", "Basic v1 base fee, 2026-02-28 to 2026-03-31", 1, 1000),
        ("discount", "Discount TWENTY: Launch offer, 20% off", None, -306),
    ]
    assert february.total == 1224
    assert await system_balance(session, "discounts") == 200 + 306, "a debit: revenue keeps its list price"
    assert await system_balance(session, "usage_revenue") == -530
    assert await system_balance(session, "subscription_revenue") == -2000
    check = await check_invoice(session, february)
    assert check.differences == [], "the accuracy check re-rates usage lines only; the discount stays out of it"


async def test_a_percentage_rounds_once_half_away_from_zero_and_keeps_the_exact_amount(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await make_coupon(session, "ODD", percent_off=Decimal("12.5"))
    await apply(session, customer_id, "ODD")
    await bill_through(sessions, settings, JAN_31)
    line = (await session.execute(text("SELECT amount_exact, amount FROM invoice_lines WHERE kind = 'discount'"))).one()
    assert (line.amount_exact, line.amount) == (Decimal("-1.25"), -125)
    await send_calls(session, "acme", 101, FEB_10)  # 0.10 of usage + 10.00: 12.5% of 10.10 = 1.2625
    await bill_through(sessions, settings, FEB_28)
    found = await session.execute(
        text("SELECT amount_exact, amount FROM invoice_lines WHERE kind = 'discount' ORDER BY amount")
    )
    assert [tuple(row) for row in found] == [(Decimal("-1.2625"), -126), (Decimal("-1.25"), -125)]


async def test_a_fixed_amount_larger_than_the_invoice_leaves_zero_not_a_credit_and_is_used_once(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await make_coupon(session, "BIG", "once", amount_off=Decimal("25.00"), currency="usd")
    await apply(session, customer_id, "BIG")
    await send_calls(session, "acme", 150, FEB_10)
    await bill_through(sessions, settings, JAN_31, FEB_28)

    opening, february = await invoices_of(session, customer_id)
    assert await lines_of(session, opening.id) == [
        ("base_fee", "Basic v1 base fee, 2026-01-31 to 2026-02-28", 1, 1000),
        ("discount", "Discount BIG: Launch offer, 25.00 USD off", None, -1000),
    ]
    assert (opening.total, opening.amount_due, opening.status) == (0, 0, "paid")
    assert "discount" not in [kind for kind, *_ in await lines_of(session, february.id)], "once: one invoice only"
    assert february.total == 1500
    used = (await session.execute(text("SELECT period_number, invoice_id, amount FROM discount_periods"))).all()
    assert [tuple(row) for row in used] == [(1, opening.id, 1000)]
    credits = await session.execute(text("SELECT count(*) FROM credit_grants"))
    assert credits.scalar_one() == 0, "never a credit"
    assert (await coupons.active_discounts(session, [customer_id]))[customer_id] == [], "used up"


async def test_a_coupon_on_a_named_meter_discounts_only_its_lines_for_n_invoices_that_have_some(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await make_coupon(
        session, "HALFCALLS", "repeating", percent_off=Decimal(50), applies_to=("calls",), duration_periods=2
    )
    await apply(session, customer_id, "HALFCALLS")
    await send_calls(session, "acme", 150, FEB_10)
    await send_calls(session, "acme", 120, FEB_28 + timedelta(days=3))
    await send_calls(session, "acme", 130, MAR_31 + timedelta(days=3))
    await bill_through(sessions, settings, JAN_31, FEB_28, MAR_31, APR_30)

    opening, february, march, april = await invoices_of(session, customer_id)
    assert "discount" not in [kind for kind, *_ in await lines_of(session, opening.id)], "no usage: nothing used"
    assert (await lines_of(session, february.id))[-1] == (
        "discount",
        "Discount HALFCALLS: Launch offer, 50% off API calls (1 of 2)",
        None,
        -250,
    )
    assert february.total == 500 + 1000 - 250, "the base fee is not discounted"
    assert (await lines_of(session, march.id))[-1] == (
        "discount",
        "Discount HALFCALLS: Launch offer, 50% off API calls (2 of 2)",
        None,
        -100,
    )
    assert "discount" not in [kind for kind, *_ in await lines_of(session, april.id)], "two periods, then none"
    used = await session.execute(text("SELECT period_number, invoice_id FROM discount_periods ORDER BY 1"))
    assert [tuple(row) for row in used] == [(1, february.id), (2, march.id)]


async def test_forever_runs_on_every_invoice_and_stacks_after_an_earlier_discount_until_removed(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await make_coupon(session, "FIVE", amount_off=Decimal("5"), currency="USD")
    await make_coupon(session, "TEN", percent_off=Decimal(10))
    await apply(session, customer_id, "FIVE", "a")
    await apply(session, customer_id, "TEN", "b", at=CREATED + timedelta(seconds=1))
    await bill_through(sessions, settings, JAN_31, FEB_28)
    for invoice in await invoices_of(session, customer_id):
        # 10.00 - 5.00 = 5.00; 10% of what is left = 0.50.
        assert [amount for kind, _, _, amount in await lines_of(session, invoice.id) if kind == "discount"] == [
            -500,
            -50,
        ]
        assert invoice.total == 450
    [five, ten] = (await coupons.active_discounts(session, [customer_id]))[customer_id]
    assert (five.periods_left, five.periods_used, ten.periods_left) == (None, 2, None)
    await coupons.remove_discount(
        session, customer_id=customer_id, discount_id=five.discount.id, actor="staff:test", as_of=MAR_31
    )
    await session.commit()
    await bill_through(sessions, settings, MAR_31)
    march = (await invoices_of(session, customer_id))[-1]
    assert [line for line in await lines_of(session, march.id) if line[0] == "discount"] == [
        ("discount", "Discount TEN: Launch offer, 10% off", None, -100)
    ]


async def test_concurrent_and_repeated_billing_runs_use_a_once_discount_on_exactly_one_invoice(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await bill_through(sessions, settings, JAN_31)
    await make_coupon(session, "ONCE", "once", percent_off=Decimal(100))
    await apply(session, customer_id, "ONCE", at=FEB_10)
    reports = await asyncio.gather(
        *(run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1)) for _ in range(4))
    )
    assert sum(report.invoices_issued for report in reports) == 1
    await bill_through(sessions, settings, FEB_28, MAR_31)
    discounted = [
        invoice.number
        for invoice in await invoices_of(session, customer_id)
        if "discount" in [kind for kind, *_ in await lines_of(session, invoice.id)]
    ]
    assert len(discounted) == 1
    assert (await session.execute(text("SELECT count(*) FROM discount_periods"))).scalar_one() == 1


async def test_a_once_discount_is_used_by_one_invoice_when_two_subscriptions_are_billed_at_once(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    await apply_catalog(session, STORAGE_ADD_ON, as_of=CREATED)
    await session.commit()
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await add_subscription(
        session, NewSubscription(customer_id, "storage-addon", "add-on", started_at=JAN_31), as_of=JAN_31
    )
    await session.commit()
    await bill_through(sessions, settings, JAN_31, JAN_31)
    await make_coupon(session, "ONCE5", "once", amount_off=Decimal(5), currency="USD")
    await apply(session, customer_id, "ONCE5", at=FEB_10)
    await send_calls(session, "acme", 150, FEB_10)
    storage = [
        {"id": f"gb-{i}", "customer": "acme", "type": "storage.used", "timestamp": FEB_10.isoformat(), "properties": {}}
        for i in range(30)
    ]
    await ingest(session, storage, received_at=FEB_10, limits=LIMITS, trace_id=None)
    await session.commit()
    reports = await asyncio.gather(
        *(run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1)) for _ in range(4))
    )
    assert sum(report.invoices_issued for report in reports) == 2, "each subscription's period invoice, once"
    usage = await session.execute(text("SELECT count(DISTINCT invoice_id) FROM invoice_lines WHERE kind = 'usage'"))
    assert usage.scalar_one() == 2, "both had something to discount"
    discount_lines = (await session.execute(text("SELECT amount FROM invoice_lines WHERE kind = 'discount'"))).all()
    assert [tuple(row) for row in discount_lines] == [(-500,)], "one invoice of the two took it"
    assert (await session.execute(text("SELECT count(*) FROM discount_periods"))).scalar_one() == 1


async def test_the_upcoming_invoice_shows_the_discount_and_uses_nothing(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await bill_through(sessions, settings, JAN_31)
    await make_coupon(session, "ONCE", "once", percent_off=Decimal(50))
    await apply(session, customer_id, "ONCE", at=FEB_10)
    preview = await upcoming_invoice(session, customer_id, as_of=FEB_10, window=billing_window(settings))
    assert preview is not None
    last = preview.draft.lines[-1]
    assert (last.kind, last.description, last.amount("USD")) == (
        "discount",
        "Discount ONCE: Launch offer, 50% off",
        -500,
    )
    assert preview.total == 500, "the next base fee, 10.00, half off"
    assert (await session.execute(text("SELECT count(*) FROM discount_periods"))).scalar_one() == 0


async def test_sixteen_concurrent_redeemers_of_the_last_redemption_get_it_once(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], billing_catalog: None
) -> None:
    await make_coupon(session, "LAST", percent_off=Decimal(10), max_redemptions=3)
    ids = []
    for i in range(18):
        customer = await create_customer(
            session, NewCustomer(external_id=f"c{i}", name=f"c{i}", currency="USD"), as_of=CREATED
        )
        ids.append(customer.id)
    await session.commit()
    await apply(session, ids[0], "LAST")
    await apply(session, ids[1], "LAST")

    async def redeem(customer_id: uuid.UUID) -> str:
        async with sessions() as own:
            try:
                await in_transaction(
                    own,
                    lambda: coupons.apply_coupon(
                        own,
                        customer_id=customer_id,
                        currency="USD",
                        code="LAST",
                        idempotency_key="k",
                        actor="staff:test",
                        as_of=CREATED,
                    ),
                )
            except TallyError as refused:
                return refused.code
            return "applied"

    outcomes = await asyncio.gather(*(redeem(customer_id) for customer_id in ids[2:]))
    assert sorted(outcomes) == sorted(["applied"] + ["COUPON_UNAVAILABLE"] * 15)
    counted = await session.execute(text("SELECT redemptions, max_redemptions FROM coupons"))
    assert tuple(counted.one()) == (3, 3)
    assert (await session.execute(text("SELECT count(*) FROM customer_discounts"))).scalar_one() == 3


async def test_applying_is_idempotent_by_key_and_once_per_customer(
    session: AsyncSession, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    await make_coupon(session, "ONE", percent_off=Decimal(10))
    await make_coupon(session, "TWO", percent_off=Decimal(10))
    first = await apply(session, customer_id, "ONE", "k")
    again = await apply(session, customer_id, "one", "k")
    assert again.id == first.id
    with pytest.raises(TallyError) as reused:
        await apply(session, customer_id, "TWO", "k")
    assert (reused.value.code, reused.value.field) == ("IDEMPOTENCY_KEY_REUSED", "idempotencyKey")
    await session.rollback()
    with pytest.raises(TallyError) as twice:
        await apply(session, customer_id, "ONE", "another key")
    assert (twice.value.code, twice.value.field) == ("ALREADY_REDEEMED", "code")
    await session.rollback()
    counted = await session.execute(text("SELECT code, redemptions FROM coupons ORDER BY code"))
    assert [tuple(row) for row in counted] == [("ONE", 1), ("TWO", 0)]


async def test_an_expired_archived_or_exhausted_coupon_or_another_currency_is_refused_and_writes_nothing(
    session: AsyncSession, billing_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)
    other = await create_customer(session, NewCustomer(external_id="eu", name="eu", currency="EUR"), as_of=CREATED)
    await session.commit()
    await make_coupon(session, "SOON", percent_off=Decimal(10), redeem_by=JAN_31)
    archived = await make_coupon(session, "GONE", percent_off=Decimal(10))
    await coupons.archive_coupon(session, archived, as_of=CREATED)
    await session.commit()
    await make_coupon(session, "USD5", amount_off=Decimal(5), currency="USD")
    refusals = []
    for code, currency, at in [
        ("SOON", "USD", JAN_31),
        ("SOON", "USD", FEB_10),
        ("GONE", "USD", CREATED),
        ("USD5", "EUR", CREATED),
        ("NOPE", "USD", CREATED),
        ("X" * 10_000, "USD", CREATED),
    ]:
        with pytest.raises(TallyError) as refused:
            await coupons.apply_coupon(
                session,
                customer_id=other.id if currency == "EUR" else customer_id,
                currency=currency,
                code=code,
                idempotency_key=f"k-{code[:8]}-{at.isoformat()}",
                actor="staff:test",
                as_of=at,
            )
        await session.rollback()
        refusals.append((refused.value.code, refused.value.field))
    assert refusals == [
        ("COUPON_UNAVAILABLE", "code"),
        ("COUPON_UNAVAILABLE", "code"),
        ("COUPON_UNAVAILABLE", "code"),
        ("INVALID", "code"),
        ("NOT_FOUND", "code"),
        ("NOT_FOUND", "code"),
    ]
    assert (await session.execute(text("SELECT count(*) FROM customer_discounts"))).scalar_one() == 0
    assert (await session.execute(text("SELECT sum(redemptions) FROM coupons"))).scalar_one() == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"percent_off": Decimal(101)}, "percentOff"),
        ({"percent_off": Decimal(-5)}, "percentOff"),
        ({"percent_off": Decimal(0)}, "percentOff"),
        ({"percent_off": Decimal("NaN")}, "percentOff"),
        ({"percent_off": Decimal("10.00001")}, "percentOff"),
        ({"percent_off": Decimal(10), "amount_off": Decimal(5), "currency": "USD"}, "percentOff"),
        ({}, "percentOff"),
        ({"percent_off": Decimal(10), "currency": "USD"}, "currency"),
        ({"amount_off": Decimal(5)}, "currency"),
        ({"amount_off": Decimal(5), "currency": "XXX"}, "currency"),
        ({"amount_off": Decimal("1e30"), "currency": "USD"}, "amountOff"),
        ({"amount_off": Decimal("0.001"), "currency": "USD"}, "amountOff"),
        ({"amount_off": Decimal("-1"), "currency": "USD"}, "amountOff"),
        ({"percent_off": Decimal(10), "code": "x" * 10_000}, "code"),
        ({"percent_off": Decimal(10), "code": "a b"}, "code"),
        ({"percent_off": Decimal(10), "name": " "}, "name"),
        ({"percent_off": Decimal(10), "name": "n" * 10_000}, "name"),
        ({"percent_off": Decimal(10), "duration": "weekly"}, "duration"),
        ({"percent_off": Decimal(10), "duration": "repeating"}, "durationPeriods"),
        ({"percent_off": Decimal(10), "duration": "repeating", "duration_periods": 0}, "durationPeriods"),
        ({"percent_off": Decimal(10), "duration_periods": 3}, "durationPeriods"),
        ({"percent_off": Decimal(10), "max_redemptions": 0}, "maxRedemptions"),
        ({"percent_off": Decimal(10), "redeem_by": CREATED}, "redeemBy"),
        ({"percent_off": Decimal(10), "applies_to": ("calls", "nope")}, "appliesTo"),
        ({"percent_off": Decimal(10), "applies_to": ("calls",) * 51}, "appliesTo"),
    ],
)
async def test_a_bad_coupon_is_refused_naming_its_field_and_nothing_is_written(
    session: AsyncSession, billing_catalog: None, changes: dict[str, object], field: str
) -> None:
    fields: dict[str, object] = {"code": "GOOD", "name": "Launch offer", "duration": "forever", **changes}
    with pytest.raises(TallyError) as refused:
        await coupons.create_coupon(session, NewCoupon(**fields), actor="staff:test", as_of=CREATED)  # type: ignore[arg-type]
    await session.rollback()
    assert refused.value.field == field, refused.value.message
    assert (await session.execute(text("SELECT count(*) FROM coupons"))).scalar_one() == 0


async def test_a_code_is_unique_ignoring_case(session: AsyncSession, billing_catalog: None) -> None:
    await make_coupon(session, "Spring", percent_off=Decimal(10))
    with pytest.raises(TallyError) as taken:
        await make_coupon(session, "SPRING", percent_off=Decimal(20))
    assert (taken.value.code, taken.value.field) == ("TAKEN", "code")


async def test_a_price_simulation_compares_list_prices_whatever_the_customers_discounts(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, billing_catalog: None
) -> None:
    discounted = await subscribe(session, "discounted", "basic", JAN_31)
    await subscribe(session, "full-price", "basic", JAN_31)
    await make_coupon(session, "HALF", percent_off=Decimal(50))
    await apply(session, discounted, "HALF")
    for customer in ("discounted", "full-price"):
        await send_calls(session, customer, 300, FEB_10)
    await bill_through(sessions, settings, JAN_31, FEB_28)
    summary = await simulate_pricing(
        session,
        catalog_text=CATALOG.replace('base_fee = "10.00"', 'base_fee = "15.00"'),
        selection=PeriodSelection(start=JAN_31, end=FEB_28),
        as_of=FEB_28 + timedelta(days=2),
    )
    # Both: 10.00 + 200 x 0.10 = 30.00 now, 35.00 under the draft; the discount is no price change.
    assert {(o.customer_key, o.current, o.simulated) for o in summary.outcomes} == {
        ("discounted", 3000, 3500),
        ("full-price", 3000, 3500),
    }
    february = (await invoices_of(session, discounted))[-1]
    assert february.total == (2000 + 1000) // 2, "while its invoice took half off"
