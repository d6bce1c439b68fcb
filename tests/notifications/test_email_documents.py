"""The emails as Tally sends them with its own documents attached (app.email.documents_for): an
issued invoice's email carries the invoice's PDF and a credit note's carries the note's, both in
the customer's language and both the very documents stored for download."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

from pypdf import PdfReader
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.email import email_delivery, send_emails
from app.invoice_documents import seller_of
from app.settings import Settings
from billing.documents import service as documents
from billing.invoices.credit_notes import CreditNoteRequest, create_credit_note
from tests.billing.scenario import invoices_of
from tests.notifications.conftest import SmtpFixture
from tests.notifications.test_email_delivery import OPENED, customer_with_details


def text_of(pdf: bytes) -> str:
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


async def test_invoice_and_credit_note_emails_carry_their_stored_pdfs_in_the_customers_language(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    billing_catalog: None,
    smtp: SmtpFixture,
) -> None:
    on = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_tls": "none", "email_from": "b@t.example"}
    )
    delivery = email_delivery(on)
    assert delivery is not None
    customer_id = await customer_with_details(session, "hans", emails=["ap@hans.example"], locale="de")
    await run_billing(sessions, settings, as_of=OPENED)
    [invoice] = await invoices_of(session, customer_id)
    note = await create_credit_note(
        session,
        CreditNoteRequest(invoice.id, "CREDIT", "duplicate", "cn-hans", "staff:test", amount=Decimal("4.00")),
        as_of=OPENED + timedelta(minutes=1),
    )
    await session.commit()

    report = await send_emails(sessions, delivery, as_of=OPENED + timedelta(minutes=2))

    assert (report.sent, report.failed) == (2, 0)
    invoice_mail, note_mail = sorted(smtp.mailbox.received, key=lambda mail: "Gutschrift" in mail.message["Subject"])
    [invoice_pdf] = list(invoice_mail.message.iter_attachments())
    [note_pdf] = list(note_mail.message.iter_attachments())
    number = f"INV-{invoice.number:06d}"
    assert invoice_pdf.get_filename() == f"{number}.pdf"
    assert "Rechnung" in text_of(invoice_pdf.get_content()) and "10,00" in text_of(invoice_pdf.get_content())
    assert note_pdf.get_filename() == f"CN-{note.note.number:06d}.pdf"
    shown = text_of(note_pdf.get_content())
    assert "Gutschrift" in shown and number in shown and "4,00" in shown
    # The attachments are the stored documents: a download gives the same bytes.
    seller = seller_of(settings)
    stored = await documents.invoice_pdf(session, invoice.id, seller=seller, as_of=OPENED, locale="de")
    assert stored.pdf == invoice_pdf.get_content()
    stored_note = await documents.credit_note_pdf(session, note.note.id, seller=seller, as_of=OPENED, locale="de")
    assert stored_note.pdf == note_pdf.get_content()
