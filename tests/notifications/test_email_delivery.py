"""Email through the outbox, sent to a real SMTP server running in the test process: what
arrives (subject, recipients, the body in the customer's locale, the attachment), exactly one
message per invoice through crashes and re-runs, retries with backoff while the server is down,
permanent rejections, and senders racing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.email import email_delivery, send_emails
from app.jobs import run_email_sender
from app.settings import Settings
from billing.collection.outcomes import Attempt, record_outcome
from billing.collection.stripe_gateway import Charge
from billing.emails import enqueue, resend
from billing.invoices import service as billing
from customers.service import NewCustomer, create_customer
from notifications import repository as outbox
from notifications import sender as sender_module
from notifications.models import EmailMessage
from notifications.sender import Attachment, message_id
from notifications.service import Email
from tests.billing.scenario import JAN_31, invoices_of, subscribe
from tests.conftest import now
from tests.notifications.conftest import SmtpFixture, free_port

OPENED = JAN_31 + timedelta(seconds=1)
PDF = b"%PDF-1.7\n% a stand-in for the invoice's document\n%%EOF\n"


class Crash(BaseException):
    """The process dying at a chosen point (not an Exception: nothing catches it)."""


async def customer_with_details(
    session: AsyncSession, external_id: str, *, emails: list[str], locale: str = "en", legal_name: str | None = None
) -> uuid.UUID:
    customer_id = await subscribe(session, external_id, "basic", JAN_31)
    await session.execute(
        text("UPDATE customers SET invoice_emails = :emails, locale = :locale, legal_name = :legal WHERE id = :id"),
        {"emails": emails, "locale": locale, "legal": legal_name, "id": customer_id},
    )
    await session.commit()
    return customer_id


async def messages_of(session: AsyncSession, customer_id: uuid.UUID) -> list[EmailMessage]:
    rows = await session.exec(
        text("SELECT id FROM email_messages WHERE customer_id = :id ORDER BY created_at, message_key").bindparams(
            id=customer_id
        )
    )
    found = await outbox.by_ids(session, [row[0] for row in rows])
    return sorted(found, key=lambda message: (message.created_at, message.message_key))


async def invoice_pdf(session: AsyncSession, message: EmailMessage) -> list[Attachment]:
    """The app's seam as the documents will fill it: the invoice's PDF, found by its id."""
    if message.kind != "invoice_issued":
        return []
    [invoice] = (await billing.invoices_by_id(session, [uuid.UUID(message.refs["invoice_id"])])).values()
    return [Attachment(f"invoice-{invoice.number}.pdf", "application/pdf", PDF)]


async def test_an_issued_invoice_arrives_in_the_customers_language_with_its_pdf(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    customer_id = await customer_with_details(
        session, "acme", emails=["ap@acme.example", "cfo@acme.example"], locale="fr", legal_name="Acme SAS"
    )
    await run_billing(sessions, settings, as_of=OPENED)
    [invoice] = await invoices_of(session, customer_id)

    report = await send_emails(sessions, smtp.delivery(attachments_for=invoice_pdf), as_of=OPENED)

    assert (report.sent, report.failed) == (1, 0)
    [received] = smtp.mailbox.received
    assert received.recipients == ["ap@acme.example", "cfo@acme.example"]
    mime = received.message
    assert mime["To"] == "ap@acme.example, cfo@acme.example"
    assert mime["From"] == "Billing <billing@tally.example>"
    # 10.00 USD due 14 days after issue (the payment terms), in French as Babel writes it.
    assert mime["Subject"] == f"Facture {invoice.number} : 10,00 $US à régler le 14 février 2026".replace(" $", "\xa0$")
    text_body = mime.get_body(preferencelist=("plain",)).get_content()
    assert "Bonjour Acme SAS," in text_body
    assert "pour la période du 31 janvier 2026 au 28 février 2026" in text_body
    assert "Montant dû : 10,00\xa0$US" in text_body  # Babel keeps the amount on one line
    html_body = mime.get_body(preferencelist=("html",)).get_content()
    assert "<strong>10,00\xa0$US</strong>" in html_body
    [attachment] = list(mime.iter_attachments())
    assert attachment.get_filename() == f"invoice-{invoice.number}.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == PDF

    [message] = await messages_of(session, customer_id)
    assert (message.status, message.attempts, message.sent_at) == ("sent", 1, OPENED)
    assert message.message_key == f"invoice-issued:{invoice.id}"
    assert message.smtp_message_id == mime["Message-ID"] == message_id(message.message_key, "billing@tally.example")


async def test_one_message_per_invoice_through_a_crash_between_render_and_send_and_reruns(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer_id = await customer_with_details(session, "acme", emails=["ap@acme.example"])
    await run_billing(sessions, settings, as_of=OPENED)
    delivery = smtp.delivery(attachments_for=invoice_pdf)
    transmit = sender_module.transmit

    async def crash_before_sending(*args: Any) -> dict[str, str]:
        raise Crash

    monkeypatch.setattr(sender_module, "transmit", crash_before_sending)
    with pytest.raises(Crash):  # rendered, attachments read, then the process dies
        await send_emails(sessions, delivery, as_of=OPENED)
    monkeypatch.setattr(sender_module, "transmit", transmit)
    [message] = await messages_of(session, customer_id)
    assert (message.status, message.attempts) == ("sending", 1)

    # The billing run again, and later: the invoice exists, so does its message; nothing more.
    await run_billing(sessions, settings, as_of=OPENED)
    await run_billing(sessions, settings, as_of=OPENED + timedelta(days=1))
    # Another sender inside the lease leaves the claimed message alone.
    assert (await send_emails(sessions, delivery, as_of=OPENED + timedelta(minutes=1))).sent == 0
    assert smtp.mailbox.received == []

    after_lease = OPENED + delivery.lease + timedelta(seconds=1)
    assert (await send_emails(sessions, delivery, as_of=after_lease)).sent == 1
    assert (await send_emails(sessions, delivery, as_of=after_lease + timedelta(hours=1))).sent == 0
    await run_billing(sessions, settings, as_of=after_lease)

    assert len(smtp.mailbox.received) == 1
    [message] = await messages_of(session, customer_id)
    assert (message.status, message.attempts) == ("sent", 2)


async def test_a_crash_after_the_server_took_it_sends_it_again_with_the_same_message_id(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one at-least-once window, as documented: sent, then the process dies before recording
    it. The copy carries the same Message-ID, so it can be recognised as one message."""
    customer_id = await customer_with_details(session, "acme", emails=["ap@acme.example"])
    await run_billing(sessions, settings, as_of=OPENED)
    delivery = smtp.delivery()
    record = outbox.record_outcome

    async def crash_before_recording(*args: Any) -> bool:
        raise Crash

    monkeypatch.setattr(outbox, "record_outcome", crash_before_recording)
    with pytest.raises(Crash):
        await send_emails(sessions, delivery, as_of=OPENED)
    monkeypatch.setattr(outbox, "record_outcome", record)
    await send_emails(sessions, delivery, as_of=OPENED + delivery.lease + timedelta(seconds=1))

    first, second = smtp.mailbox.received
    assert first.message["Message-ID"] == second.message["Message-ID"]
    [message] = await messages_of(session, customer_id)
    assert message.status == "sent"


async def test_the_server_down_is_retried_with_backoff_then_failed(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    customer_id = await customer_with_details(session, "acme", emails=["ap@acme.example"])
    await run_billing(sessions, settings, as_of=OPENED)
    up = smtp.delivery(max_attempts=3, retry_first=timedelta(minutes=1))
    down = replace(up, server=replace(up.server, port=free_port()))  # nothing listens there

    first = await send_emails(sessions, down, as_of=OPENED)
    assert (first.sent, first.retrying) == (0, 1)
    [message] = await messages_of(session, customer_id)
    assert (message.status, message.attempts) == ("pending", 1)
    assert message.next_attempt_at == OPENED + timedelta(minutes=1)
    assert "SMTPConnect" in (message.last_error or "")

    assert (await send_emails(sessions, down, as_of=OPENED + timedelta(seconds=59))).retrying == 0  # not due yet
    assert (await send_emails(sessions, down, as_of=OPENED + timedelta(minutes=1))).retrying == 1
    [message] = await messages_of(session, customer_id)
    assert message.next_attempt_at == OPENED + timedelta(minutes=1 + 2)  # doubled
    last = await send_emails(sessions, down, as_of=OPENED + timedelta(minutes=3))
    assert (last.retrying, last.failed) == (0, 1)
    [message] = await messages_of(session, customer_id)
    assert (message.status, message.attempts) == ("failed", 3)
    assert "SMTPConnect" in (message.last_error or "")
    # Failed stays failed: the server back up sends nothing by itself (resend does).
    assert (await send_emails(sessions, smtp.delivery(), as_of=OPENED + timedelta(days=1))).sent == 0
    assert smtp.mailbox.received == []


async def test_a_permanent_rejection_fails_at_once_and_a_partial_one_is_recorded(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    bounced = await customer_with_details(session, "bounced", emails=["gone@acme.example"])
    partly = await customer_with_details(session, "partly", emails=["gone@acme.example", "ap@acme.example"])
    busy = await customer_with_details(session, "busy", emails=["busy@acme.example"])
    smtp.mailbox.refuse = {"gone@acme.example": "550 5.1.1 no such user", "busy@acme.example": "451 4.3.0 try later"}
    await run_billing(sessions, settings, as_of=OPENED)

    await send_emails(sessions, smtp.delivery(), as_of=OPENED)

    [message] = await messages_of(session, bounced)
    assert (message.status, message.attempts) == ("failed", 1)
    assert "550" in (message.last_error or "") and "no such user" in (message.last_error or "")
    [message] = await messages_of(session, partly)
    assert message.status == "sent"
    assert "gone@acme.example refused: 550" in (message.last_error or "")
    [message] = await messages_of(session, busy)
    assert (message.status, message.attempts) == ("pending", 1)  # a 4xx answer: tried again
    assert [r.recipients for r in smtp.mailbox.received] == [["ap@acme.example"]]


async def test_a_refused_message_body_fails_at_once(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    customer_id = await customer_with_details(session, "acme", emails=["ap@acme.example"])
    await run_billing(sessions, settings, as_of=OPENED)
    smtp.mailbox.data_answer = "554 5.7.1 message refused as spam"
    await send_emails(sessions, smtp.delivery(), as_of=OPENED)
    [message] = await messages_of(session, customer_id)
    assert (message.status, message.attempts) == ("failed", 1)
    assert "554" in (message.last_error or "")


async def test_two_senders_racing_send_each_message_once(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    for i in range(12):
        await customer_with_details(session, f"c{i}", emails=[f"ap{i}@c{i}.example"])
    await run_billing(sessions, settings, as_of=OPENED)
    delivery = smtp.delivery()

    reports = await asyncio.gather(*(send_emails(sessions, delivery, as_of=OPENED, batch=2) for _ in range(2)))

    assert sum(report.sent for report in reports) == 12
    assert all(report.sent > 0 for report in reports)  # both took part
    recipients = sorted(r.recipients[0] for r in smtp.mailbox.received)
    assert recipients == sorted(f"ap{i}@c{i}.example" for i in range(12))
    assert len({r.message["Message-ID"] for r in smtp.mailbox.received}) == 12


async def test_no_recipients_is_skipped_and_a_resend_after_adding_one_is_sent(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    customer_id = await subscribe(session, "acme", "basic", JAN_31)  # no email at all
    await run_billing(sessions, settings, as_of=OPENED)
    [skipped] = await messages_of(session, customer_id)
    assert (skipped.status, skipped.recipients, skipped.last_error) == (
        "skipped",
        [],
        "the customer has no invoice email",
    )
    await send_emails(sessions, smtp.delivery(), as_of=OPENED)
    assert smtp.mailbox.received == []

    await session.execute(
        text("UPDATE customers SET invoice_emails = '{ap@acme.example}', locale = 'de' WHERE id = :id"),
        {"id": customer_id},
    )
    again = await resend(session, skipped.id, as_of=OPENED + timedelta(hours=1))
    twice = await resend(session, skipped.id, as_of=OPENED + timedelta(hours=1))  # a double click
    await session.commit()
    assert again.id == twice.id
    assert (again.message_key, again.recipients, again.locale) == (
        f"{skipped.message_key}:resend:1",
        ["ap@acme.example"],
        "de",
    )
    await send_emails(sessions, smtp.delivery(), as_of=OPENED + timedelta(hours=1))
    [received] = smtp.mailbox.received
    assert received.message["Subject"].startswith("Rechnung ")
    # Once sent, another resend is a new message with the next number.
    third = await resend(session, again.id, as_of=OPENED + timedelta(hours=2))
    await session.commit()
    assert third.message_key == f"{skipped.message_key}:resend:2"


async def test_payment_failures_and_receipts_are_queued_with_the_outcome(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    customer_id = await customer_with_details(session, "acme", emails=["ap@acme.example"], locale="es")
    await run_billing(sessions, settings, as_of=OPENED)
    [invoice] = await invoices_of(session, customer_id)
    retry_after = (timedelta(days=3),)
    attempt = Attempt(invoice.id, customer_id, 1, invoice.amount_due, "USD")
    declined = Charge("failed", "pi_1", "Your card was declined.")
    await record_outcome(session, attempt, declined, as_of=OPENED, retry_after=retry_after)
    await record_outcome(session, attempt, declined, as_of=OPENED, retry_after=retry_after)  # the webhook too
    await session.commit()
    second = Attempt(invoice.id, customer_id, 2, invoice.amount_due, "USD")
    paid_at = OPENED + timedelta(days=3)
    await record_outcome(
        session, second, Charge("succeeded", "pi_2", None, "ch_2"), as_of=paid_at, retry_after=retry_after
    )
    await session.commit()

    keys = [m.message_key for m in await messages_of(session, customer_id)]
    assert sorted(keys) == [
        f"invoice-issued:{invoice.id}",
        f"payment-failed:{invoice.id}:1",
        f"payment-receipt:{invoice.id}",
    ]
    await send_emails(sessions, smtp.delivery(), as_of=paid_at)
    subjects = [r.message["Subject"] for r in smtp.mailbox.received]
    assert f"Ha fallado el pago de la factura {invoice.number}" in subjects
    assert f"Recibo: 10,00\xa0US$ pagados por la factura {invoice.number}" in subjects
    failed = next(r.message for r in smtp.mailbox.received if r.message["Subject"].startswith("Ha fallado"))
    assert "Lo intentaremos de nuevo el 3 de febrero de 2026" in failed.get_body(("plain",)).get_content()


async def test_with_email_off_messages_wait_and_stale_ones_are_skipped(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    smtp: SmtpFixture,
) -> None:
    assert email_delivery(settings) is None  # no TALLY_SMTP_HOST
    on = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_tls": "none", "email_from": "b@t.example"}
    )
    delivery = email_delivery(on)
    assert delivery is not None
    customer_id = await customer_with_details_no_plan(session)
    for day in (0, 4):
        email = Email(f"test:{day}", "payment_receipt", customer_id, {}, RECEIPT)
        await enqueue(session, email, as_of=JAN_31 + timedelta(days=day))
    await session.commit()

    report = await send_emails(sessions, delivery, as_of=JAN_31 + timedelta(days=4))

    assert report.sent == 1
    old, new = await messages_of(session, customer_id)
    assert (old.status, old.last_error) == ("skipped", "not sent within 72 hours of being queued")
    assert new.status == "sent"


RECEIPT = {"invoice_number": 7, "currency": "EUR", "amount_paid": 1250, "paid_at": "2026-01-31T00:00:00+00:00"}


async def customer_with_details_no_plan(session: AsyncSession) -> uuid.UUID:
    customer = await create_customer(
        session, NewCustomer(external_id="solo", name="Solo", currency="EUR", email="solo@example.com"), as_of=JAN_31
    )
    await session.commit()
    return customer.id


def test_the_password_is_never_in_a_repr(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"smtp_host": "smtp.example", "email_from": "b@t.example", "smtp_password": SecretStr("hunter2-secret")}
    )
    delivery = email_delivery(configured)
    assert delivery is not None
    assert delivery.server.password == "hunter2-secret"
    assert "hunter2-secret" not in repr(delivery) + repr(configured) + str(configured.model_dump())


def test_the_message_id_is_the_same_for_every_try_of_a_key_at_the_from_domain() -> None:
    first = message_id("invoice-issued:1", "Billing <billing@tally.example>")
    assert first == message_id("invoice-issued:1", "billing@tally.example")
    assert first.startswith("<") and first.endswith("@tally.example>")
    assert first != message_id("invoice-issued:2", "billing@tally.example")


async def test_a_credit_note_email_for_the_integrator_and_one_that_cannot_render(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], smtp: SmtpFixture
) -> None:
    """Credit notes are queued by the credit notes' own code (not here); their template renders
    these facts. Content its template cannot render is retried like a server down, reason kept."""
    customer_id = await customer_with_details_no_plan(session)
    facts = {"credit_note_number": "CN-3", "invoice_number": 7, "currency": "EUR", "amount": 250}
    at = JAN_31.isoformat()
    await enqueue(
        session, Email("credit-note:1", "credit_note", customer_id, {}, {**facts, "issued_at": at}), as_of=JAN_31
    )
    await enqueue(session, Email("credit-note:2", "credit_note", customer_id, {}, facts), as_of=JAN_31)
    await session.commit()

    report = await send_emails(sessions, smtp.delivery(), as_of=JAN_31)

    assert (report.sent, report.retrying) == (1, 1)
    [received] = smtp.mailbox.received
    assert received.message["Subject"] == "Credit note CN-3: €2.50 credited on invoice 7"
    broken = next(m for m in await messages_of(session, customer_id) if m.message_key == "credit-note:2")
    assert broken.status == "pending"
    assert (broken.last_error or "").startswith("could not render: TypeError")  # no issued_at for the date


async def test_tally_serve_sends_what_is_due_on_its_own(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings, smtp: SmtpFixture
) -> None:
    customer_id = await customer_with_details_no_plan(session)
    await enqueue(session, Email("test:serve", "payment_receipt", customer_id, {}, RECEIPT), as_of=now())
    await session.commit()
    on = settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_tls": "none",
            "email_from": "b@t.example",
            "email_interval_seconds": 60,
        }
    )
    sender = asyncio.create_task(run_email_sender(sessions, on))
    try:
        assert await asyncio.to_thread(smtp.mailbox.arrived.wait, 20)  # the server's own thread sets it
        for _ in range(200):  # recorded, so the sender is asleep when it is stopped (not mid-query)
            if [m.status for m in await messages_of(session, customer_id)] == ["sent"]:
                break
            await asyncio.sleep(0.05)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    assert smtp.mailbox.received[0].message["Subject"].startswith("Receipt: €12.50 paid for invoice 7")


def test_a_smtp_host_needs_a_from_address() -> None:
    with pytest.raises(ValidationError, match="TALLY_EMAIL_FROM"):
        Settings(smtp_host="smtp.example")
    assert Settings(smtp_host="smtp.example", email_from="b@t.example").smtp_tls == "starttls"
