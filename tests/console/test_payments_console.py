"""The console's collection pages in-process, over a real localstripe: a customer's Payments tab
(attempts, dunning dates, payments, disputes, CSV), finance's confirmed write-off (once, however
often submitted), what a viewer may not do, and the Reconciliation page (both sides compared,
resolve with a note, CSV, Run now)."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.jobs import collect_invoices
from app.main import create_app
from app.settings import Settings
from app.staff import create_user
from pricing.service import apply_catalog
from tests.billing.scenario import CATALOG, JAN_31, subscribe
from tests.billing.stripe_support import CARD_DECLINED, LocalStripe, billed_with_card, start_localstripe
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in

FAILED_AT = JAN_31 + timedelta(minutes=2)


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    server = start_localstripe(tmp_path_factory.mktemp("localstripe") / "localstripe.log")
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


async def add_staff(session: AsyncSession) -> None:
    for email, role in (("fin@example.com", "finance"), ("ro@example.com", "viewer")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    await session.commit()


@pytest.fixture
async def declined(
    session: AsyncSession, sessions: Any, settings: Settings, localstripe: LocalStripe
) -> tuple[uuid.UUID, Settings]:
    """A Basic customer whose 10.00 invoice was declined once by Stripe: past due, a retry due."""
    await add_staff(session)
    customer_id, configured = await billed_with_card(
        session, sessions, settings, "org_declines", CARD_DECLINED, localstripe
    )
    await collect_invoices(sessions, configured, as_of=FAILED_AT)
    return customer_id, configured


@pytest.fixture
async def console(declined: tuple[uuid.UUID, Settings], database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with collection on (localstripe)."""
    app: FastAPI = create_app(declined[1], database_url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def scalar(session: AsyncSession, sql: str, **params: Any) -> Any:
    return (await session.execute(text(sql), params)).scalar_one()


def section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</section>", start)]


async def test_payments_tab_shows_collection_attempts_dunning_dates_payments_and_disputes(
    console: httpx.AsyncClient, declined: tuple[uuid.UUID, Settings], session: AsyncSession
) -> None:
    customer_id, _ = declined
    await sign_in(console, "fin@example.com", PASSWORD)
    invoices_tab = await console.get(f"/console/customers/{customer_id}/invoices")
    assert f'href="/console/customers/{customer_id}/payments"' in invoices_tab.text, "a Payments tab"
    page = await console.get(f"/console/customers/{customer_id}/payments")
    assert page.status_code == 200
    html = page.text
    assert 'aria-current="page">Payments</a>' in html
    stripe_customer = await scalar(session, "SELECT stripe_customer_id FROM stripe_customers")
    collection = section(html, "collection")
    assert "Collection is on" in collection and f"<code>{stripe_customer}</code>" in collection
    assert "none saved" in collection, "the default payment method comes with Stripe's events; none arrived"
    dunning = section(html, "dunning")
    assert "PAST_DUE" in dunning and "INV-000001" in dunning
    assert "<td>2026-01-31 00:02</td>" in dunning, "the first failure"
    assert "<td>2026-02-03 00:02</td>" in dunning, "the retry, 3 days later"
    due = await scalar(session, "SELECT coalesce(due_at, issued_at) FROM invoices")
    assert f'<td class="due-at">{due:%Y-%m-%d}</td>' in section(html, "collected-invoices"), "its due date"
    attempts = section(html, "attempts")
    assert "status-failed" in attempts and "Your card was declined." in attempts
    declined_intent = await scalar(session, "SELECT payment_intent_id FROM payment_attempts")
    assert (f"<code>{declined_intent}</code>" if declined_intent else "<td>—</td>") in attempts

    invoice_id = await scalar(session, "SELECT id FROM invoices")
    payment_intent = "pi_console_paid"
    await session.execute(
        text(
            "INSERT INTO payment_attempts (invoice_id, attempt, payment_intent_id, status, error, created_at) "
            "VALUES (:invoice, 2, 'pi_console_auth', 'requires_action', NULL, :at)"
        ),
        {"invoice": invoice_id, "at": FAILED_AT + timedelta(days=3)},
    )
    await session.execute(
        text("UPDATE collection_outbox SET status = 'action_required', attempts = 2 WHERE invoice_id = :invoice"),
        {"invoice": invoice_id},
    )
    await session.execute(
        text(
            "INSERT INTO stripe_payments (payment_intent_id, invoice_id, customer_id, charge_id, amount, currency, "
            "refunded, disputed, paid_at, ledger_transaction_id) VALUES (:pi, :invoice, :customer, 'ch_console', "
            "1000, 'USD', 250, 750, :at, :txn)"
        ),
        {"pi": payment_intent, "invoice": invoice_id, "customer": customer_id, "at": FAILED_AT, "txn": uuid.uuid4()},
    )
    await session.execute(
        text(
            "INSERT INTO stripe_disputes (dispute_id, payment_intent_id, amount, currency, reason, status, opened_at, "
            "ledger_transaction_id) VALUES ('dp_console', :pi, 750, 'USD', 'fraudulent', 'needs_response', :at, :txn)"
        ),
        {"pi": payment_intent, "at": FAILED_AT, "txn": uuid.uuid4()},
    )
    await session.commit()
    html = (await console.get(f"/console/customers/{customer_id}/payments")).text
    attempts = section(html, "attempts")
    assert "<code>pi_console_auth</code>" in attempts
    assert attempts.count("waiting for the customer to authenticate") == 1
    assert "waiting for the customer to authenticate" in section(html, "collected-invoices")
    payments = section(html, "payments")
    assert "<code>pi_console_paid</code>" in payments and "10.00 USD" in payments
    assert '<td class="num">2.50</td>' in payments and '<td class="num">7.50</td>' in payments
    disputes = section(html, "disputes")
    assert "<code>dp_console</code>" in disputes and "fraudulent" in disputes and "needs response" in disputes

    exported = await console.get(f"/console/customers/{customer_id}/payments.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["invoice"], r["attempt"], r["status"]) for r in rows] == [
        ("INV-000001", "1", "failed"),
        ("INV-000001", "2", "requires_action"),
    ]
    assert rows[0]["error"] == "Your card was declined."
    missing = await console.get("/console/customers/00000000-0000-0000-0000-000000000000/payments")
    assert missing.status_code == 404


def action_form(html: str, invoice_id: uuid.UUID) -> dict[str, str]:
    """The finance form of one invoice on the Payments tab, as a browser would submit it."""
    match = re.search(
        rf'<form method="post" action="(/console/customers/[^"]+/payments/{invoice_id}/confirm)".*?</form>',
        html,
        re.S,
    )
    assert match, "the invoice has a finance form"
    key = re.search(r'name="idempotency_key" value="([^"]+)"', match.group(0))
    assert key
    return {"action": match.group(1), "csrftoken": csrf_of(html), "idempotency_key": key.group(1)}


async def test_a_confirmed_write_off_happens_once_however_often_it_is_submitted(
    console: httpx.AsyncClient, declined: tuple[uuid.UUID, Settings], session: AsyncSession
) -> None:
    customer_id, configured = declined
    configured.amount_in_words_above = Decimal(5)  # the app's own settings: 10.00 counts as large here
    invoice_id = await scalar(session, "SELECT id FROM invoices")
    await sign_in(console, "fin@example.com", PASSWORD)
    tab = (await console.get(f"/console/customers/{customer_id}/payments")).text
    form = action_form(tab, invoice_id)
    fields = {"csrftoken": form["csrftoken"], "idempotency_key": form["idempotency_key"]}

    no_reason = await console.post(form["action"], data={**fields, "action": "write_off", "reason": ""})
    assert no_reason.status_code == 422
    assert '<span class="field-error">say why: a reason is required</span>' in no_reason.text
    assert form["idempotency_key"] in no_reason.text, "the form comes back with its key"

    confirmation = await console.post(form["action"], data={**fields, "action": "write_off", "reason": "went bust"})
    assert confirmation.status_code == 200
    assert "Write off 10.00 USD of INV-000001 to bad debt?" in confirmation.text
    assert "<strong>ten US dollars</strong>" in confirmation.text, "a large amount is stated in words"
    assert await scalar(session, "SELECT status FROM invoices") == "issued", "nothing happens before confirming"
    confirm = re.search(r'<form method="post" action="([^"]+/write_off)">(.*?)</form>', confirmation.text, re.S)
    assert confirm
    posted = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm.group(2)))
    assert posted["idempotency_key"] == form["idempotency_key"] and posted["reason"] == "went bust"

    done = await console.post(confirm.group(1), data=posted)
    assert done.status_code == 303
    assert "INV-000001 is uncollectible" in (await console.get(done.headers["location"])).text
    write_offs = "SELECT count(*) FROM ledger_transactions WHERE kind = 'write_off'"
    assert await scalar(session, "SELECT status FROM invoices") == "uncollectible"
    assert await scalar(session, write_offs) == 1

    again = await console.post(confirm.group(1), data=posted)  # a double submit: the same answer
    assert again.status_code == 303 and again.headers["location"] == done.headers["location"]
    assert await scalar(session, write_offs) == 1, "the second submission changes nothing"
    assert await scalar(session, "SELECT status FROM invoices") == "uncollectible"
    tab_after = (await console.get(again.headers["location"])).text
    assert "nothing to do" in section(tab_after, "collected-invoices"), "no more actions on a closed invoice"


async def test_retry_now_requeues_the_invoice_and_void_reverses_it(
    console: httpx.AsyncClient, declined: tuple[uuid.UUID, Settings], session: AsyncSession
) -> None:
    customer_id, _ = declined
    invoice_id = await scalar(session, "SELECT id FROM invoices")
    await sign_in(console, "fin@example.com", PASSWORD)
    form = action_form((await console.get(f"/console/customers/{customer_id}/payments")).text, invoice_id)
    fields = {"csrftoken": form["csrftoken"], "idempotency_key": form["idempotency_key"]}
    retry = await console.post(form["action"], data={**fields, "action": "retry", "reason": ""})
    assert retry.status_code == 200 and "Charge 10.00 USD for INV-000001 now, from the customer&#39;s saved card?" in (
        retry.text
    )
    retried = await console.post(f"/console/customers/{customer_id}/payments/{invoice_id}/retry", data=fields)
    assert retried.status_code == 303
    due = await scalar(session, "SELECT next_attempt_at FROM collection_outbox")
    assert abs(due - now()) < timedelta(minutes=1), "due now, not at the scheduled retry"
    assert "Retry now: INV-000001 is issued" in (await console.get(retried.headers["location"])).text

    void = await console.post(form["action"], data={**fields, "action": "void", "reason": "billed by mistake"})
    assert "Void INV-000001: its 10.00 USD and the credits it drew are reversed in the ledger?" in void.text
    voided = await console.post(
        f"/console/customers/{customer_id}/payments/{invoice_id}/void", data={**fields, "reason": "billed by mistake"}
    )
    assert voided.status_code == 303
    assert await scalar(session, "SELECT status FROM invoices") == "void"
    assert await scalar(session, "SELECT status FROM collection_outbox") == "failed", "no more retries"


async def test_a_viewer_sees_no_finance_actions_and_no_reconciliation(
    console: httpx.AsyncClient, declined: tuple[uuid.UUID, Settings], session: AsyncSession
) -> None:
    customer_id, _ = declined
    invoice_id = await scalar(session, "SELECT id FROM invoices")
    await sign_in(console, "ro@example.com", PASSWORD)
    page = await console.get(f"/console/customers/{customer_id}/payments")
    assert page.status_code == 200 and "PAST_DUE" in page.text
    for action in ("Retry now", "Mark uncollectible", "Void", "/confirm"):
        assert action not in page.text
    refused = await console.post(
        f"/console/customers/{customer_id}/payments/{invoice_id}/void",
        data={"csrftoken": csrf_of(page.text), "reason": "no", "idempotency_key": "k"},
    )
    assert refused.status_code == 400 and await scalar(session, "SELECT status FROM invoices") == "issued"
    reconciliation = await console.get("/console/reconciliation")
    assert reconciliation.status_code == 403 and "may not see reconciliation" in reconciliation.text


async def test_without_a_stripe_key_the_tab_says_collection_is_off(
    client: httpx.AsyncClient, session: AsyncSession, sessions: Any, settings: Settings
) -> None:
    await add_staff(session)
    await apply_catalog(session, CATALOG, as_of=JAN_31 - timedelta(days=1))
    await session.commit()
    customer_id = await subscribe(session, "org_nokey", "basic", JAN_31)
    await run_billing(sessions, settings, as_of=JAN_31 + timedelta(minutes=1))
    await sign_in(client, "fin@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{customer_id}/payments")
    assert page.status_code == 200 and "Collection is off: set STRIPE_API_KEY" in page.text
    assert "No attempt yet." in section(page.text, "attempts")
    actions = section(page.text, "collected-invoices")
    assert "Mark uncollectible" in actions and "Retry now" not in actions, "nothing would collect a retry"
    reconciliation = await client.get("/console/reconciliation")
    assert "Collection is off" in reconciliation.text and "agree" not in reconciliation.text, "nothing was compared"
    run = await client.post("/console/reconciliation/run", data={"csrftoken": csrf_of(reconciliation.text)})
    assert run.status_code == 422 and "STRIPE_API_KEY" in run.text


async def plant_discrepancies(session: AsyncSession, customer_id: uuid.UUID) -> tuple[str, str]:
    """A one-cent mismatch and a payment missing in Tally, as reconciliation records them."""
    mismatch, missing = uuid.uuid4(), uuid.uuid4()
    tally = {"payment_intent": "pi_cent", "amount": 1000, "currency": "USD"}
    stripe = {"payment_intent": "pi_cent", "amount": 1001, "currency": "USD", "status": "succeeded"}
    for row_id, kind, object_id, summary, tally_side, stripe_side, detected in (
        (mismatch, "AMOUNT_MISMATCH", "pi_cent", "Tally has 10.00 USD, Stripe 10.01 USD", tally, stripe, 1),
        (missing, "MISSING_IN_TALLY", "pi_unknown", "Stripe took 5.00 USD that Tally never recorded", None, stripe, 0),
    ):
        await session.execute(
            text(
                "INSERT INTO reconciliation_discrepancies (id, kind, object_id, customer_id, summary, tally_side, "
                "stripe_side, detected_at, last_seen_at, status) VALUES (:id, :kind, :object_id, :customer, "
                ":summary, CAST(:tally AS jsonb), CAST(:stripe AS jsonb), :detected, :detected, 'open')"
            ),
            {
                "id": row_id,
                "kind": kind,
                "object_id": object_id,
                "customer": customer_id,
                "summary": summary,
                "tally": json.dumps(tally_side) if tally_side else None,
                "stripe": json.dumps(stripe_side),
                "detected": JAN_31 + timedelta(days=1, minutes=detected),
            },
        )
    await session.execute(
        text(
            "INSERT INTO reconciliation_runs (id, as_of, started_at, checked, discrepancies) "
            "VALUES (:id, :at, :at, 7, 2)"
        ),
        {"id": uuid.uuid4(), "at": JAN_31 + timedelta(days=1)},
    )
    await session.commit()
    return str(mismatch), str(missing)


async def test_reconciliation_compares_both_sides_resolves_with_a_note_and_exports(
    console: httpx.AsyncClient, declined: tuple[uuid.UUID, Settings], session: AsyncSession
) -> None:
    customer_id, _ = declined
    mismatch, missing = await plant_discrepancies(session, customer_id)
    await sign_in(console, "fin@example.com", PASSWORD)
    page = await console.get("/console/reconciliation")
    assert page.status_code == 200 and "arrive with issue" not in page.text
    runs = section(page.text, "runs")
    assert re.search(r"<td>2026-02-01 00:00</td><td class=\"num\">7</td><td class=\"num\">2</td>", runs)
    results = section(page.text, "reconciliation-results")
    assert "AMOUNT_MISMATCH" in results and "MISSING_IN_TALLY" in results
    assert results.index(mismatch) < results.index(missing), "newest first"
    assert "Tally has 10.00 USD, Stripe 10.01 USD" in results
    link = "/console/reconciliation/customers/org_declines"
    assert f'href="{link}"' in results
    customer = await console.get(link)
    assert customer.status_code == 303 and customer.headers["location"] == f"/console/customers/{customer_id}/payments"

    expanded = await console.get(f"/console/reconciliation/{mismatch}?status=open", headers={"HX-Request": "true"})
    assert "<html" not in expanded.text and f'id="comparison-{mismatch}"' in expanded.text
    differing = re.findall(r'<tr class="differs"><th scope="row"><code>(\w+)</code>', expanded.text)
    assert differing == ["amount", "status"], "the cent and the key only Stripe has"
    assert "<td>1000</td><td>1001</td>" in expanded.text and "<td>USD</td><td>USD</td>" in expanded.text
    full = await console.get(f"/console/reconciliation/{missing}")
    assert "<html" in full.text and "MISSING_IN_TALLY" in full.text and "<td>—</td><td>pi_cent</td>" in full.text

    resolve = f"/console/reconciliation/{mismatch}/resolve"
    refused = await console.post(resolve, data={"csrftoken": csrf_of(page.text), "note": " ", "back": "open"})
    assert refused.status_code == 422
    assert '<span class="field-error">say what was found or done</span>' in refused.text
    status_of = "SELECT status FROM reconciliation_discrepancies WHERE id = :id"
    assert await scalar(session, status_of, id=uuid.UUID(mismatch)) == "open"
    note = "Stripe rounded a tax line; refunded the cent"
    resolved = await console.post(resolve, data={"csrftoken": csrf_of(page.text), "note": note, "back": "open"})
    assert resolved.status_code == 303 and resolved.headers["location"].startswith(
        "/console/reconciliation?status=open"
    )
    row = (
        await session.execute(
            text("SELECT status, note, resolved_by FROM reconciliation_discrepancies WHERE id = :id"),
            {"id": uuid.UUID(mismatch)},
        )
    ).one()
    assert tuple(row) == ("resolved", note, "staff:fin@example.com")

    still_open = await console.get("/console/reconciliation", params={"status": "open"}, headers={"HX-Request": "true"})
    assert "<html" not in still_open.text and missing in still_open.text and mismatch not in still_open.text
    done = (await console.get("/console/reconciliation", params={"status": "resolved"})).text
    assert mismatch in done and note in done
    exported = await console.get("/console/reconciliation.csv", params={"status": "all"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["kind"], r["status"], r["customer"]) for r in rows] == [
        ("AMOUNT_MISMATCH", "resolved", "org_declines"),
        ("MISSING_IN_TALLY", "open", "org_declines"),
    ]
    assert rows[0]["note"] == note and json.loads(rows[0]["stripe_side"])["amount"] == 1001
    assert len(list(csv.DictReader(io.StringIO((await console.get("/console/reconciliation.csv")).text)))) == 1

    run = await console.post("/console/reconciliation/run", data={"csrftoken": csrf_of(page.text)})
    assert run.status_code == 303
    after_run = (await console.get(run.headers["location"])).text
    assert "Reconciled as of" in after_run and "checked" in after_run


async def test_the_reconciliation_page_lists_stripe_events_with_their_delivery_traces(
    console: httpx.AsyncClient, declined: tuple[uuid.UUID, Settings], session: AsyncSession
) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    await session.execute(
        text(
            "INSERT INTO stripe_events (id, type, object_id, created, livemode, payload, received_at, deliveries, "
            "status, error, trace_id) VALUES ('evt_console_1', 'charge.refunded', 'ch_console_1', :at, false, '{}', "
            ":at, 3, 'failed', 'refunded in EUR, paid in USD', :trace)"
        ),
        {"at": JAN_31, "trace": trace},
    )
    await session.commit()
    await sign_in(console, "fin@example.com", PASSWORD)
    events = section((await console.get("/console/reconciliation")).text, "stripe-events")
    assert "charge.refunded" in events and "refunded in EUR, paid in USD" in events
    assert f'href="/console/traces/{trace}"' in events and '<td class="num">3</td>' in events
