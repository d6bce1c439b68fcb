"""Credit notes against the real database: full and partial, per line and by amount, each way of
settling (credit balance, less to collect; refunds to the card are in test_credit_note_refunds.py),
never more than was charged under 16 concurrent attempts, gapless numbers under concurrency, and
hostile input refused with nothing written. Every test ends with the ledger verified (conftest)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from billing.collection import unpaid_invoices as finance
from billing.collection.outbox import claim_next
from billing.documents.credit_note import build_credit_note_document
from billing.invoices.credit_notes import (
    CreditNoteRequest,
    LineCredit,
    create_credit_note,
    credit_note_number,
    spread,
)
from ledger import service as ledger
from ledger.errors import TallyError
from tests.billing.documents.support import SELLER
from tests.billing.scenario import FEB_28, JAN_31, invoices_of, opening_invoice, send_calls, subscribe

LATER = JAN_31 + timedelta(days=2)


def request(invoice_id: uuid.UUID, key: str, *, method: str = "CREDIT", **changes: Any) -> CreditNoteRequest:
    fields: dict[str, Any] = {
        "invoice_id": invoice_id,
        "method": method,
        "reason": "product_unsatisfactory",
        "idempotency_key": key,
        "actor": "finance@example.com",
        "note": "the service was down for two days",
    }
    if "lines" not in changes:
        fields["amount"] = Decimal("10.00")
    fields.update(changes)
    return CreditNoteRequest(**fields)


@pytest.fixture(autouse=True)
def rows_stay_readable(session: AsyncSession) -> None:
    """The notes a test got stay readable after it commits (as they were then)."""
    session.sync_session.expire_on_commit = False


def plain(invoice: Any) -> SimpleNamespace:
    """The invoice's values, readable after a rollback (which expires its row)."""
    return SimpleNamespace(**{name: getattr(invoice, name) for name in ("id", "customer_id", "number", "total")})


async def revenue(session: AsyncSession, kind: str) -> int:
    """A revenue account's credit balance (what it holds as revenue), from its postings."""
    row = await session.execute(
        text(
            "SELECT coalesce(-sum(p.amount), 0) FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = :kind"
        ),
        {"kind": kind},
    )
    return int(row.scalar_one())


async def written(session: AsyncSession) -> tuple[int, int, int]:
    """Credit notes, their lines, and the number counter: what a refused request must leave alone."""
    row = await session.execute(
        text(
            "SELECT (SELECT count(*) FROM credit_notes), (SELECT count(*) FROM credit_note_lines), "
            "(SELECT last_number FROM credit_note_number_counter)"
        )
    )
    notes, lines, counter = row.one()
    return int(notes), int(lines), int(counter)


async def period_invoice(session: AsyncSession, sessions: Any, settings: Settings) -> Any:
    """A Basic customer's February invoice: 300 calls (200 over the 100 included, at 0.10: 20.00)
    and March's base fee (10.00) in advance."""
    await subscribe(session, "acme", "basic", JAN_31)
    await send_calls(session, "acme", 300, JAN_31 + timedelta(days=5))
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    await run_billing(sessions, settings, as_of=FEB_28 + timedelta(hours=1))
    customer_id = (await session.execute(text("SELECT id FROM customers WHERE external_id = 'acme'"))).scalar_one()
    invoice = (await invoices_of(session, customer_id))[-1]
    assert invoice.kind == "period" and invoice.total == 3000
    return invoice


async def test_a_full_credit_to_the_balance_reverses_the_revenue_and_grants_the_credit(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = plain(await opening_invoice(session, sessions, settings))
    assert await revenue(session, "subscription_revenue") == 1000
    outcome = await create_credit_note(session, request(invoice.id, "cn-1"), as_of=LATER)
    await session.commit()
    note = outcome.note
    assert (credit_note_number(note.number), note.amount, note.method, note.status) == (
        "CN-000001",
        1000,
        "CREDIT",
        "issued",
    )
    assert [(line.invoice_line_position, line.amount) for line in outcome.lines] == [(0, 1000)]
    note_id, description = note.id, outcome.lines[0].description
    assert await revenue(session, "subscription_revenue") == 0
    balances = await ledger.balances(session, invoice.customer_id, "USD")
    assert (balances.credits, balances.outstanding) == (1000, 1000), "credited, and the invoice still to pay"
    again = await create_credit_note(session, request(invoice.id, "cn-1"), as_of=LATER)  # retried: same note
    assert again.note.id == note.id and await written(session) == (1, 1, 1)
    with pytest.raises(TallyError) as reused:
        await create_credit_note(session, request(invoice.id, "cn-1", amount=Decimal("1.00")), as_of=LATER)
    assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"
    await session.rollback()
    with pytest.raises(TallyError) as exceeded:
        await create_credit_note(session, request(invoice.id, "cn-2", amount=Decimal("0.01")), as_of=LATER)
    assert (exceeded.value.code, exceeded.value.field) == ("CREDIT_EXCEEDED", "amount")
    await session.rollback()
    view = await build_credit_note_document(session, note_id, seller=SELLER)
    assert (view.number, view.invoice_number, view.total, view.reason) == (
        "CN-000001",
        f"INV-{invoice.number:06d}",
        1000,
        "product_unsatisfactory",
    )
    assert [(line.description, line.amount) for line in view.lines] == [(description, 1000)]


async def test_reducing_what_is_due_makes_the_collection_charge_only_the_rest(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = plain(await opening_invoice(session, sessions, settings))
    await create_credit_note(
        session, request(invoice.id, "r1", method="REDUCE_DUE", amount=Decimal("3.00")), as_of=LATER
    )
    await session.commit()
    assert (await ledger.balances(session, invoice.customer_id, "USD")).outstanding == 700
    with pytest.raises(TallyError) as exceeded:
        await create_credit_note(
            session, request(invoice.id, "r2", method="REDUCE_DUE", amount=Decimal("7.01")), as_of=LATER
        )
    assert (exceeded.value.code, exceeded.value.field) == ("CREDIT_EXCEEDED", "amount")
    await session.rollback()
    claimed = await claim_next(session, as_of=LATER)
    assert claimed is not None and claimed.attempt.amount == 700, "the outbox collects only what is still due"
    await session.rollback()
    await create_credit_note(
        session, request(invoice.id, "r3", method="REDUCE_DUE", amount=Decimal("7.00")), as_of=LATER
    )
    await session.commit()
    statuses = await session.execute(
        text("SELECT i.status, o.status FROM invoices i JOIN collection_outbox o ON o.invoice_id = i.id")
    )
    assert tuple(statuses.one()) == ("paid", "collected"), "nothing left to collect"
    assert (await ledger.balances(session, invoice.customer_id, "USD")).outstanding == 0
    assert await claim_next(session, as_of=LATER) is None
    with pytest.raises(TallyError) as nothing_due:
        await create_credit_note(
            session, request(invoice.id, "r4", method="REDUCE_DUE", amount=Decimal("0.01")), as_of=LATER
        )
    assert (nothing_due.value.code, await written(session)) == ("CREDIT_EXCEEDED", (2, 2, 2))


async def test_per_line_and_by_amount_reverse_each_lines_revenue(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = plain(await period_invoice(session, sessions, settings))
    lines = {line.kind: line for line in (await ledger_lines(session, invoice.id))}
    usage, fee = (SimpleNamespace(position=lines[k].position, amount=lines[k].amount) for k in ("usage", "base_fee"))
    usage_before, fees_before = await revenue(session, "usage_revenue"), await revenue(session, "subscription_revenue")
    per_line = await create_credit_note(
        session,
        request(invoice.id, "l1", lines=(LineCredit(usage.position, Decimal("5.00")),), reason="order_change"),
        as_of=LATER,
    )
    await session.commit()
    assert [(line.invoice_line_position, line.revenue_account, line.amount) for line in per_line.lines] == [
        (usage.position, "usage_revenue", 500)
    ]
    assert await revenue(session, "usage_revenue") == usage_before - 500
    with pytest.raises(TallyError) as over_line:  # 15.00 is left of the usage line
        await create_credit_note(
            session, request(invoice.id, "l2", lines=(LineCredit(usage.position, Decimal("15.01")),)), as_of=LATER
        )
    assert (over_line.value.code, over_line.value.field) == ("CREDIT_EXCEEDED", "lines.0.amount")
    await session.rollback()
    with pytest.raises(TallyError) as no_line:
        await create_credit_note(
            session, request(invoice.id, "l3", lines=(LineCredit(99, Decimal("1.00")),)), as_of=LATER
        )
    assert (no_line.value.code, no_line.value.field) == ("NOT_FOUND", "lines.0.position")
    await session.rollback()
    # 10.00 by amount over what is left (usage 15.00, fee 10.00): 6.00 and 4.00
    by_amount = await create_credit_note(session, request(invoice.id, "a1"), as_of=LATER)
    await session.commit()
    assert sorted((line.revenue_account, line.amount) for line in by_amount.lines) == [
        ("subscription_revenue", 400),
        ("usage_revenue", 600),
    ]
    assert await revenue(session, "usage_revenue") == usage_before - 1100
    assert await revenue(session, "subscription_revenue") == fees_before - 400
    rest = await create_credit_note(session, request(invoice.id, "a2", amount=Decimal("15.00")), as_of=LATER)
    await session.commit()
    assert rest.note.amount == 1500 and await written(session) == (3, 5, 3), "the invoice is credited in full"
    assert fee.amount == 1000


async def ledger_lines(session: AsyncSession, invoice_id: uuid.UUID) -> list[Any]:
    from billing.invoices.repository import lines_of

    return (await lines_of(session, [invoice_id]))[invoice_id]


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"amount": Decimal("0")}, "INVALID", "amount"),
        ({"amount": Decimal("-5.00")}, "INVALID", "amount"),
        ({"amount": Decimal("10.01")}, "CREDIT_EXCEEDED", "amount"),
        ({"amount": Decimal("0.001")}, "INVALID", "amount"),
        ({"amount": Decimal("1e30")}, "INVALID", "amount"),
        ({"amount": Decimal("NaN")}, "INVALID", "amount"),
        ({"lines": (LineCredit(7, Decimal("1")),)}, "NOT_FOUND", "lines.0.position"),
        ({"lines": (LineCredit(-1, Decimal("1")),)}, "NOT_FOUND", "lines.0.position"),
        ({"lines": (LineCredit(0, Decimal("1")), LineCredit(0, Decimal("1")))}, "INVALID", "lines"),
        ({"lines": (LineCredit(0, Decimal("0")),)}, "INVALID", "lines.0.amount"),
        ({"lines": ()}, "INVALID", "amount"),
        ({"lines": (LineCredit(0, Decimal("1")),), "amount": Decimal("1")}, "INVALID", "amount"),
        ({"note": "x" * 100_000}, "INVALID", "note"),
        ({"idempotency_key": "k" * 100_000}, "INVALID", "idempotencyKey"),
        ({"idempotency_key": "   "}, "INVALID", "idempotencyKey"),
        ({"reason": "because" * 1000}, "INVALID", "reason"),
        ({"method": "CASH"}, "INVALID", "method"),
        ({"method": "REFUND"}, "INVALID", "method"),  # never paid by card: nothing to refund
        ({"unknown_invoice": True}, "NOT_FOUND", "invoiceId"),
    ],
)
async def test_hostile_input_is_refused_by_field_and_nothing_is_written(
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    billing_catalog: None,
    changes: dict[str, Any],
    code: str,
    field: str,
) -> None:
    invoice = plain(await opening_invoice(session, sessions, settings))
    invoice_id = uuid.uuid4() if changes.pop("unknown_invoice", False) else invoice.id
    with pytest.raises(TallyError) as refused:
        await create_credit_note(session, request(invoice_id, "hostile", **changes), as_of=LATER)
    await session.rollback()
    assert (refused.value.code, refused.value.field) == (code, field)
    assert await written(session) == (0, 0, 0)
    assert await revenue(session, "subscription_revenue") == 1000


async def test_a_void_invoice_cannot_be_credited(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = plain(await opening_invoice(session, sessions, settings))
    await finance.void_invoice(session, invoice.id, reason="by mistake", actor="fin", idempotency_key="v", as_of=LATER)
    await session.commit()
    with pytest.raises(TallyError) as refused:
        await create_credit_note(session, request(invoice.id, "on-void"), as_of=LATER)
    await session.rollback()
    assert (refused.value.code, refused.value.field) == ("INVOICE_VOID", "invoiceId")
    assert await written(session) == (0, 0, 0)


async def test_a_dry_run_answers_the_note_and_writes_nothing(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = plain(await opening_invoice(session, sessions, settings))
    outcome = await create_credit_note(
        session, request(invoice.id, "dry", amount=Decimal("2.50")), as_of=LATER, dry_run=True
    )
    await session.rollback()
    assert (outcome.dry_run, outcome.note.amount, [line.amount for line in outcome.lines]) == (True, 250, [250])
    assert await written(session) == (0, 0, 0)


async def attempt(sessions: Any, req: CreditNoteRequest) -> int | str:
    """One request in its own transaction, committed: the note's number, or the refusal's code."""
    async with sessions() as own:
        try:
            outcome = await create_credit_note(own, req, as_of=LATER)
            await own.commit()
            return outcome.note.number
        except TallyError as error:
            await own.rollback()
            return error.code


async def test_sixteen_concurrent_notes_never_credit_more_than_the_invoice(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = plain(await opening_invoice(session, sessions, settings))
    methods = ("CREDIT", "REDUCE_DUE")
    requests = [request(invoice.id, f"c{i}", method=methods[i % 2], amount=Decimal("3.00")) for i in range(16)]
    outcomes = await asyncio.gather(*(attempt(sessions, req) for req in requests))
    numbers = sorted(o for o in outcomes if isinstance(o, int))
    assert numbers == [1, 2, 3], outcomes
    assert sorted(o for o in outcomes if isinstance(o, str)) == ["CREDIT_EXCEEDED"] * 13
    credited = (await session.execute(text("SELECT sum(amount) FROM credit_notes"))).scalar_one()
    assert credited == 900 <= invoice.total
    assert await revenue(session, "subscription_revenue") == 100


async def test_numbers_have_no_gaps_under_concurrency_and_refusals(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoices = []
    for i in range(4):
        await subscribe(session, f"org{i}", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    rows = await session.execute(text("SELECT id FROM invoices ORDER BY number"))
    invoices = [row[0] for row in rows]
    assert len(invoices) == 4
    requests = [
        request(invoices[i % 4], f"g{i}", amount=Decimal("2.00") if i % 3 else Decimal("11.00")) for i in range(16)
    ]
    outcomes = await asyncio.gather(*(attempt(sessions, req) for req in requests))
    numbers = sorted(o for o in outcomes if isinstance(o, int))
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) == 10, outcomes
    assert (await written(session))[2] == 10


@given(amount=st.integers(0, 10**6), weights=st.lists(st.integers(1, 10**6), min_size=1, max_size=20))
def test_spreading_an_amount_adds_up_and_never_passes_a_weight(amount: int, weights: list[int]) -> None:
    amount = min(amount, sum(weights))
    parts = spread(amount, weights)
    assert sum(parts) == amount and all(0 <= part <= weight for part, weight in zip(parts, weights, strict=True))


async def test_finance_after_a_note_never_reverses_twice_nor_writes_off_what_is_not_due(
    session: AsyncSession, sessions: Any, settings: Settings, billing_catalog: None
) -> None:
    invoice = plain(await opening_invoice(session, sessions, settings))
    await create_credit_note(
        session, request(invoice.id, "part", method="REDUCE_DUE", amount=Decimal("4.00")), as_of=LATER
    )
    await session.commit()
    with pytest.raises(TallyError) as refused:
        await finance.void_invoice(session, invoice.id, reason="oops", actor="fin", idempotency_key="v", as_of=LATER)
    await session.rollback()
    assert refused.value.field == "invoiceId" and "credit notes" in refused.value.message
    await finance.mark_uncollectible(session, invoice.id, reason="gone", actor="fin", idempotency_key="w", as_of=LATER)
    await session.commit()
    bad_debt = await revenue(session, "bad_debt")
    assert bad_debt == -600, "only the 6.00 still due is written off"
    assert (await ledger.balances(session, invoice.customer_id, "USD")).outstanding == 0
