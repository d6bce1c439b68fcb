"""Per-customer prices, worked out by hand: an override rated on the invoice (its unit price kept
on the line), a mid-period override splitting the usage, the history kept, an overridden limit
answered by the entitlement, simulatePricing keeping the override, a plan change dropping it, the
dry run's amounts, idempotency, bad input (nothing written), and no extra query for customers
without an override."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import billing_window, run_billing
from app.settings import Settings
from billing.insights.accuracy import check_invoice
from billing.invoices import service as billing
from billing.invoices.plan_changes import change_plan
from billing.invoices.price_overrides import PriceOverrideResult, change_price_override
from billing.invoices.simulation import PeriodSelection, simulate_pricing
from customers import price_overrides
from customers.errors import InvalidInput
from customers.price_overrides import ChargeSelector, PriceOverrideRequest
from customers.service import NewCustomer, create_customer
from customers.subscriptions import PlanChangeRequest
from ledger.errors import IdempotencyKeyReused, NotFound, TallyError
from metering.entitlements import entitlement, entitlement_by_external_id
from pricing.overrides import OverrideFields, TierInput
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, invoices_of, lines_of, send_calls, subscribe

TIERED = """
[[plans]]
key = "tiered"
name = "Tiered"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "calls"
  model = "graduated"
  tiers = [{ up_to = 100, unit_price = "0.10" }, { up_to = "inf", unit_price = "0.05" }]
  limit = 5
"""
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)  # a 31-day period: [Mar 1, Apr 1)
MAR_2 = datetime(2026, 3, 2, tzinfo=UTC)
MAR_16 = datetime(2026, 3, 16, tzinfo=UTC)  # 15 days before, 16 after
APR_1 = datetime(2026, 4, 1, tzinfo=UTC)
WINDOW = billing_window(Settings())


@pytest.fixture
async def prices_catalog(session: AsyncSession) -> None:
    await apply_catalog(session, CATALOG + TIERED, as_of=MAR_1 - timedelta(days=60))
    await session.commit()


async def override(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    key: str = "override-1",
    as_of: datetime = MAR_2,
    remove: bool = False,
    dry_run: bool = False,
    charge: ChargeSelector | None = None,
    effective_at: datetime | None = None,
    reason: str = "negotiated",
    **fields: Any,
) -> PriceOverrideResult:
    request = PriceOverrideRequest(
        customer_id=customer_id,
        charge=charge or ChargeSelector(meter_key="calls"),
        fields=None if remove else OverrideFields(**fields),
        reason=reason,
        idempotency_key=key,
        actor="staff:fin@example.com",
        effective_at=effective_at,
    )
    result = await change_price_override(session, request, as_of=as_of, window=WINDOW, dry_run=dry_run)
    if dry_run:
        await session.rollback()
    else:
        await session.commit()
    return result


async def override_rows(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM price_overrides"))).scalar_one())


async def test_an_override_rates_the_period_and_keeps_its_unit_price_on_the_invoice_line(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, prices_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    await override(session, customer_id, unit_price=Decimal("0.04"), included=Decimal(50), effective_at=MAR_1)
    await send_calls(session, "acme", 300, datetime(2026, 3, 5, tzinfo=UTC))
    upcoming = await billing.upcoming_invoice(
        session, customer_id, as_of=datetime(2026, 3, 20, tzinfo=UTC), window=WINDOW
    )
    assert upcoming is not None
    # (300 calls - 50 included) x 0.04 = 10.00 (the plan's terms would give (300 - 100) x 0.10 = 20.00).
    [usage_line] = [line for line in upcoming.draft.lines if line.kind == "usage"]
    assert (usage_line.amount("USD"), usage_line.unit_price) == (1000, Decimal("0.04"))
    await run_billing(sessions, settings, as_of=APR_1 + timedelta(hours=1))
    closing = (await invoices_of(session, customer_id))[-1]
    assert await lines_of(session, closing.id) == [
        ("usage", "API calls (region=eu)", 300, 1000),
        ("base_fee", "Basic v1 base fee, 2026-04-01 to 2026-05-01", 1, 1000),
    ]
    [line] = [line for line in (await billing.lines_of(session, [closing.id]))[closing.id] if line.kind == "usage"]
    assert line.unit_price == Decimal("0.04")
    assert (await check_invoice(session, closing)).differences == [], "the accuracy check re-rates with the override"


async def test_a_mid_period_override_splits_the_usage_like_a_plan_change(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, prices_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    await send_calls(session, "acme", 100, datetime(2026, 3, 5, tzinfo=UTC))
    preview = await override(session, customer_id, unit_price=Decimal("0.04"), as_of=MAR_16, dry_run=True)
    # Before: 100 calls, 100 included: 0. After: the first 15 days have 100 x 15/31 = 48.387... included,
    # so 51.612... calls at 0.10 = 5.16; nothing yet after the override.
    assert (preview.effect.charge_before, preview.effect.charge_after) == (0, 516)
    assert preview.effect.invoice_after - preview.effect.invoice_before == 516
    assert await override_rows(session) == 0, "a dry run writes nothing"
    await override(session, customer_id, unit_price=Decimal("0.04"), as_of=MAR_16)
    await send_calls(session, "acme", 200, datetime(2026, 3, 20, tzinfo=UTC))
    await run_billing(sessions, settings, as_of=APR_1 + timedelta(hours=1))
    closing = (await invoices_of(session, customer_id))[-1]
    assert await lines_of(session, closing.id) == [
        ("usage", "API calls from 2026-03-01 to 2026-03-16 (region=eu)", 100, 516),
        # 16 days on 0.04: 100 x 16/31 = 51.612... included; (200 - 51.612...) x 0.04 = 5.935... -> 5.94.
        ("usage", "API calls from 2026-03-16 to 2026-04-01 (region=eu)", 200, 594),
        ("base_fee", "Basic v1 base fee, 2026-04-01 to 2026-05-01", 1, 1000),
    ]
    assert (await check_invoice(session, closing)).differences == []
    # A late event of the first part is billed at that part's price, on the next invoice.
    await send_calls(session, "acme", 10, datetime(2026, 3, 10, tzinfo=UTC), received=APR_1 + timedelta(hours=2))
    await run_billing(sessions, settings, as_of=datetime(2026, 5, 1, 1, tzinfo=UTC))
    may = (await invoices_of(session, customer_id))[-1]
    late = [line for line in await lines_of(session, may.id) if line[0] == "late_usage"]
    assert late == [
        (
            "late_usage",
            "Late usage for 2026-03-01 to 2026-04-01: API calls from 2026-03-01 to 2026-03-16 (region=eu)",
            10,
            100,
        )
    ]


async def test_history_is_kept_and_never_edited(session: AsyncSession, prices_catalog: None) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    await override(session, customer_id, key="k1", unit_price=Decimal("0.08"))
    await override(session, customer_id, key="k2", unit_price=Decimal("0.06"), as_of=MAR_16, reason="renewal")
    await override(session, customer_id, key="k3", remove=True, as_of=MAR_16 + timedelta(days=1), reason="ended")
    history = await price_overrides.history(session, customer_id)
    assert [(row.action, row.reason, row.terms) for row in history] == [
        ("remove", "ended", {}),
        ("set", "renewal", {"unit_price": "0.06"}),
        ("set", "negotiated", {"unit_price": "0.08"}),
    ]
    assert [(row.before["unit_price"], row.after["unit_price"]) for row in history] == [
        ("0.06", "0.1"),
        ("0.08", "0.06"),
        ("0.1", "0.08"),
    ]
    assert {row.actor for row in history} == {"staff:fin@example.com"}
    timeline = await price_overrides.overrides_of_customer(session, customer_id)
    charge_id = history[0].plan_charge_id
    assert timeline.in_effect(charge_id, MAR_2) == {"unit_price": "0.08"}
    assert timeline.in_effect(charge_id, MAR_16) == {"unit_price": "0.06"}
    assert timeline.in_effect(charge_id, APR_1) is None
    with pytest.raises(DBAPIError, match="immutable"):
        await session.execute(text("UPDATE price_overrides SET reason = 'rewritten'"))
    await session.rollback()


async def test_an_overridden_limit_is_what_the_entitlement_answers(session: AsyncSession, prices_catalog: None) -> None:
    now = datetime.now(UTC)
    customer = await create_customer(
        session,
        NewCustomer(
            external_id="edge-co", name="Edge", currency="USD", plan_key="tiered", started_at=now - timedelta(days=1)
        ),
        as_of=now - timedelta(days=1),
    )
    await session.commit()
    await send_calls(session, "edge-co", 5, now - timedelta(hours=1))
    refused = await entitlement(session, customer.id, "calls", suspended=False, as_of=now)
    assert refused is not None and (refused.allowed, refused.limit) == (False, Decimal(5))
    await override(session, customer.id, limit=Decimal(8), as_of=now)
    for found in (
        await entitlement(session, customer.id, "calls", suspended=False, as_of=now),
        (await entitlement_by_external_id(session, "edge-co", "calls", as_of=now)).entitlement,  # type: ignore[union-attr]
    ):
        assert found is not None and (found.allowed, found.used, found.limit, found.remaining) == (
            True,
            Decimal(5),
            Decimal(8),
            Decimal(3),
        )
    await override(session, customer.id, key="lift", unlimited=True, as_of=now + timedelta(seconds=1))
    lifted = (
        await entitlement_by_external_id(session, "edge-co", "calls", as_of=now + timedelta(seconds=2))
    ).entitlement  # type: ignore[union-attr]
    assert lifted is not None and (lifted.allowed, lifted.limit) == (True, None)


async def test_simulate_pricing_keeps_a_customers_override_where_it_applies(
    session: AsyncSession, prices_catalog: None
) -> None:
    feb_1 = datetime(2026, 2, 1, tzinfo=UTC)
    special = await subscribe(session, "special", "basic", feb_1)
    await subscribe(session, "regular", "basic", feb_1)
    for customer in ("special", "regular"):
        await send_calls(session, customer, 300, datetime(2026, 2, 10, tzinfo=UTC))
    await override(session, special, unit_price=Decimal("0.04"), included=Decimal(0))
    draft = (CATALOG + TIERED).replace('unit_price = "0.10"', 'unit_price = "0.20"', 1)
    summary = await simulate_pricing(
        session, catalog_text=draft, selection=PeriodSelection(start=None, end=MAR_2, last=1), as_of=MAR_2
    )
    outcomes = {outcome.customer_key: (outcome.current, outcome.simulated) for outcome in summary.outcomes}
    # February: 10.00 base fee + usage. Regular: (300 - 100) x 0.10 = 20.00, under the draft x 0.20 = 40.00.
    # Special keeps their own terms on both sides: 300 x 0.04 = 12.00, whatever the plan's unit price.
    assert outcomes == {"regular": (3000, 5000), "special": (2200, 2200)}


async def test_a_plan_change_drops_the_override_and_says_so(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, prices_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    await override(session, customer_id, unit_price=Decimal("0.01"), included=Decimal(0), effective_at=MAR_1)
    await send_calls(session, "acme", 100, datetime(2026, 3, 5, tzinfo=UTC))
    outcome = await change_plan(
        session, PlanChangeRequest(customer_id, "plus", "IMMEDIATELY", "to-plus", "test"), as_of=MAR_16
    )
    await session.commit()
    assert outcome.change is not None
    dropped = (await price_overrides.dropped_by(session, [outcome.change.id]))[outcome.change.id]
    assert [(row.action, row.effective_at, row.before["unit_price"]) for row in dropped] == [("remove", MAR_16, "0.01")]
    assert dropped[0].reason.startswith("dropped by the plan change to Plus v1")
    await send_calls(session, "acme", 200, datetime(2026, 3, 20, tzinfo=UTC))
    # Back to basic (the same version): the dropped override does not come back.
    await change_plan(
        session,
        PlanChangeRequest(customer_id, "basic", "PERIOD_END", "back", "test"),
        as_of=datetime(2026, 3, 25, tzinfo=UTC),
    )
    await session.commit()
    await run_billing(sessions, settings, as_of=APR_1 + timedelta(hours=1))
    closing = (await invoices_of(session, customer_id))[-1]
    usage = [line for line in await lines_of(session, closing.id) if line[0] == "usage"]
    # Basic with the override until Mar 16: 100 x 0.01 = 1.00; plus after it: 200 x 0.05 = 10.00.
    assert usage == [
        ("usage", "API calls from 2026-03-01 to 2026-03-16 (region=eu)", 100, 100),
        ("usage", "API calls from 2026-03-16 to 2026-04-01 (region=eu)", 200, 1000),
    ]
    timeline = await price_overrides.overrides_of_customer(session, customer_id)
    assert timeline.in_effect_now(datetime(2026, 4, 2, tzinfo=UTC)) == {}


async def test_a_retry_returns_the_first_result_and_another_input_under_the_key_is_refused(
    session: AsyncSession, prices_catalog: None
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    first = await override(session, customer_id, unit_price=Decimal("0.05"))
    again = await override(session, customer_id, unit_price=Decimal("0.05"), as_of=MAR_16)
    assert again.outcome.change.id == first.outcome.change.id and await override_rows(session) == 1
    with pytest.raises(IdempotencyKeyReused):
        await override(session, customer_id, unit_price=Decimal("0.06"))
    await session.rollback()
    assert await override_rows(session) == 1


BAD_INPUT: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "a meter the plan does not charge",
        {"charge": ChargeSelector(meter_key="tokens"), "unit_price": Decimal(1)},
        "charge",
        "CHARGE_NOT_IN_PLAN",
    ),
    (
        "a position the plan lacks",
        {"charge": ChargeSelector(position=3), "unit_price": Decimal(1)},
        "charge",
        "CHARGE_NOT_IN_PLAN",
    ),
    ("a negative price", {"unit_price": Decimal("-0.01")}, "unitPrice", "INVALID"),
    ("more than 12 decimal places", {"unit_price": Decimal("0.0000000000001")}, "unitPrice", "INVALID"),
    ("a negative limit", {"limit": Decimal(-1)}, "limit", "INVALID"),
    ("a negative allowance", {"included": Decimal(-5)}, "included", "INVALID"),
    ("tiers on a per-unit charge", {"tiers": [TierInput(None, Decimal(1))]}, "tiers", "INVALID"),
    ("a limit and unlimited", {"limit": Decimal(5), "unlimited": True}, "limit", "INVALID"),
    ("nothing to override", {}, "charge", "INVALID"),
    ("no reason", {"unit_price": Decimal(1), "reason": "  "}, "reason", "INVALID"),
    (
        "a moment in an invoiced period",
        {"unit_price": Decimal(1), "effective_at": MAR_1 - timedelta(days=1)},
        "effectiveAt",
        "INVALID",
    ),
]


@pytest.mark.parametrize(("case", "arguments", "field", "code"), BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
async def test_bad_input_is_a_field_error_and_writes_nothing(
    session: AsyncSession, prices_catalog: None, case: str, arguments: dict[str, Any], field: str, code: str
) -> None:
    customer_id = await subscribe(session, "acme", "basic", MAR_1)
    with pytest.raises(TallyError) as refused:
        await override(session, customer_id, **arguments)
    await session.rollback()
    assert (refused.value.field, refused.value.code) == (field, code), refused.value.message
    assert await override_rows(session) == 0
    flagged = (await session.execute(text("SELECT bool_or(has_price_overrides) FROM subscriptions"))).scalar_one()
    assert flagged is False


async def test_tiers_out_of_order_and_charges_of_other_versions_are_refused(
    session: AsyncSession, prices_catalog: None
) -> None:
    tiered = await subscribe(session, "tiers-co", "tiered", MAR_1)
    with pytest.raises(InvalidInput, match="upTo must increase") as refused:
        await override(
            session,
            tiered,
            tiers=[
                TierInput(Decimal(100), Decimal("0.1")),
                TierInput(Decimal(50), Decimal("0.05")),
                TierInput(None, Decimal(0)),
            ],
        )
    assert refused.value.field == "tiers"
    await session.rollback()
    basic = await subscribe(session, "acme", "basic", MAR_1)
    # A new version of basic: its charge is not the charge of the version acme is on.
    await apply_catalog(session, (CATALOG + TIERED).replace('base_fee = "10.00"', 'base_fee = "11.00"'), as_of=MAR_1)
    await session.commit()
    newest = (
        await session.execute(
            text(
                "SELECT c.id FROM plan_charges c JOIN plan_versions v ON v.id = c.plan_version_id "
                "JOIN plans p ON p.id = v.plan_id WHERE p.key = 'basic' ORDER BY v.version DESC LIMIT 1"
            )
        )
    ).scalar_one()
    with pytest.raises(InvalidInput) as other_version:
        await override(session, basic, charge=ChargeSelector(charge_id=str(newest)), unit_price=Decimal(1))
    assert (other_version.value.field, other_version.value.code) == ("charge", "CHARGE_NOT_IN_PLAN")
    await session.rollback()
    unsubscribed = await create_customer(
        session, NewCustomer(external_id="nobody", name="Nobody", currency="USD"), as_of=MAR_1
    )
    await session.commit()
    with pytest.raises(InvalidInput) as no_subscription:
        await override(session, unsubscribed.id, unit_price=Decimal(1))
    assert (no_subscription.value.field, no_subscription.value.code) == ("customerId", "NO_SUBSCRIPTION")
    await session.rollback()
    with pytest.raises(NotFound):
        await override(session, uuid.uuid4(), unit_price=Decimal(1))
    await session.rollback()
    with pytest.raises(InvalidInput) as nothing_to_remove:
        await override(session, basic, remove=True)
    assert nothing_to_remove.value.code == "NO_OVERRIDE"
    await session.rollback()
    assert await override_rows(session) == 0


async def test_customers_without_an_override_read_no_override_when_billed(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    prices_catalog: None,
    sent_statements: list[str],
) -> None:
    plain = await subscribe(session, "plain", "basic", MAR_1)
    special = await subscribe(session, "special", "basic", MAR_1)
    await override(session, special, unit_price=Decimal("0.05"))
    sent_statements.clear()
    await run_billing(sessions, settings, as_of=APR_1 + timedelta(hours=1))
    assert len(await invoices_of(session, plain)) == 2 and len(await invoices_of(session, special)) == 2
    reads = [statement for statement in sent_statements if "FROM price_overrides" in statement]
    assert len(reads) == 1, "one read, for the one customer who has an override"
