"""The threshold check after each roll-up: every subscription on a plan with an invoice threshold
whose unbilled usage reached it gets an interim invoice (:mod:`billing.invoices.threshold_invoicing`), one
committed transaction each. One subscription's failure is logged and never stops the others; the
next roll-up checks it again, and a check can never issue an invoice twice."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import in_transaction
from app.metrics import INVOICES_ISSUED
from app.settings import Settings
from app.telemetry import current_trace_id
from billing.invoices.threshold_invoicing import issue_interim_invoice, threshold_subscriptions
from billing.models import Invoice

logger = logging.getLogger("tally.billing")


async def invoice_thresholds(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    as_of: datetime,
    customer_ids: Collection[uuid.UUID] | None = None,
) -> list[Invoice]:
    """Issue the interim invoices due by ``as_of`` (of the customers named: those whose usage the
    roll-up touched; all customers on threshold plans when None); the invoices issued."""
    async with sessions() as session:
        candidates = await threshold_subscriptions(session, customer_ids)
    issued = []
    terms = timedelta(days=settings.payment_terms_days)
    for customer_id, subscription_id in candidates:
        try:
            invoice = await _check_one(sessions, customer_id, subscription_id, as_of, terms)
        except Exception:
            logger.exception("the threshold check of subscription %s failed; the next roll-up retries", subscription_id)
            continue
        if invoice is not None:
            INVOICES_ISSUED.add(1, {"currency": invoice.currency, "kind": invoice.kind})
            issued.append(invoice)
    return issued


async def _check_one(
    sessions: async_sessionmaker[AsyncSession],
    customer_id: uuid.UUID,
    subscription_id: uuid.UUID,
    as_of: datetime,
    payment_terms: timedelta,
) -> Invoice | None:
    async with sessions() as session:
        return await in_transaction(
            session,
            lambda: issue_interim_invoice(
                session,
                customer_id,
                subscription_id,
                as_of=as_of,
                trace_id=current_trace_id(),
                payment_terms=payment_terms,
            ),
        )
