"""SQL of stored invoice and credit note documents."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.documents.models import StoredCreditNoteDocument, StoredDocument
from billing.models import PaymentAttempt


async def stored_document(
    session: AsyncSession, invoice_id: uuid.UUID, kind: str, locale: str, status: str
) -> StoredDocument | None:
    found = await session.exec(
        select(StoredDocument).where(
            StoredDocument.invoice_id == invoice_id,
            StoredDocument.kind == kind,
            StoredDocument.locale == locale,
            StoredDocument.status == status,
        )
    )
    return found.first()


async def store_document(session: AsyncSession, document: StoredDocument) -> None:
    """Keep the first document stored for its (invoice, kind, locale, status): a concurrent render that
    lost the race writes nothing, and its caller reads the winner's bytes."""
    await session.execute(
        insert(StoredDocument)
        .values(
            invoice_id=document.invoice_id,
            kind=document.kind,
            locale=document.locale,
            status=document.status,
            sha256=document.sha256,
            pdf=document.pdf,
            rendered_at=document.rendered_at,
        )
        .on_conflict_do_nothing(index_elements=["invoice_id", "kind", "locale", "status"])
    )


async def stored_credit_note_document(
    session: AsyncSession, credit_note_id: uuid.UUID, locale: str
) -> StoredCreditNoteDocument | None:
    found = await session.exec(
        select(StoredCreditNoteDocument).where(
            StoredCreditNoteDocument.credit_note_id == credit_note_id, StoredCreditNoteDocument.locale == locale
        )
    )
    return found.first()


async def store_credit_note_document(session: AsyncSession, document: StoredCreditNoteDocument) -> None:
    """Keep the first PDF stored for its (note, locale), as :func:`store_document` does."""
    await session.execute(
        insert(StoredCreditNoteDocument)
        .values(
            credit_note_id=document.credit_note_id,
            locale=document.locale,
            sha256=document.sha256,
            pdf=document.pdf,
            rendered_at=document.rendered_at,
        )
        .on_conflict_do_nothing(index_elements=["credit_note_id", "locale"])
    )


async def latest_payment_intent(session: AsyncSession, invoice_id: uuid.UUID) -> tuple[str, str] | None:
    """The invoice's latest PaymentIntent and its attempt's status, if collection made one."""
    found = await session.exec(
        select(PaymentAttempt)
        .where(PaymentAttempt.invoice_id == invoice_id, col(PaymentAttempt.payment_intent_id).is_not(None))
        .order_by(col(PaymentAttempt.attempt).desc())
        .limit(1)
    )
    attempt = found.first()
    return (attempt.payment_intent_id, attempt.status) if attempt and attempt.payment_intent_id else None
