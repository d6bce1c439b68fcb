"""Invoice documents over HTTP: the hosted page and its PDF behind a signed link (no sign-in),
and the authenticated PDF download for staff and the invoice's own customer (an invoice's, and a
credit note's).

Every refusal is a small page (or JSON for the API) with a stable code, never a 5xx: a link that
was altered or names no invoice is 404 ``INVOICE_LINK_INVALID``, an expired one 410
``INVOICE_LINK_EXPIRED``, an unknown locale 422 ``UNKNOWN_LOCALE``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

import stripe
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import Capability, Viewer
from app.collection import stripe_gateway
from app.dependencies import SessionDep, authenticate
from app.settings import Settings
from billing.collection.stripe_gateway import StripeUnavailable, client_secret_of
from billing.documents import service as documents
from billing.documents.document import InvoiceDocument, Seller
from billing.documents.errors import InvoiceLinkExpired, InvoiceLinkInvalid, InvoiceNotFound, UnknownLocale
from billing.documents.links import InvoiceLink, read_link, sign_link
from billing.documents.locales import check_locale
from billing.documents.render import HostedPage, Payment, render_html
from ledger.errors import TallyError

router = APIRouter()
logger = logging.getLogger("tally.invoices")


def seller_of(settings: Settings) -> Seller:
    return Seller(
        legal_name=settings.seller_legal_name,
        address_lines=tuple(line.strip() for line in settings.seller_address.splitlines() if line.strip()),
        country=settings.seller_country or "",
        tax_id=settings.seller_tax_id,
        email=settings.seller_email,
    )


def public_url(settings: Settings, path: str) -> str:
    """A path on Tally's public address (the path alone when TALLY_PUBLIC_BASE_URL is unset)."""
    return f"{(settings.public_base_url or '').rstrip('/')}{path}"


def create_link(settings: Settings, invoice_id: uuid.UUID, *, days: int | None, as_of: datetime) -> InvoiceLink:
    """A hosted-page link lasting ``days`` (default TALLY_INVOICE_LINK_DAYS), signed with Tally's secret."""
    lasting = settings.invoice_link_days if days is None else days
    return sign_link(settings.session_secret, invoice_id, days=lasting, as_of=as_of)


def pdf_response(pdf: documents.InvoicePdf, *, download: bool) -> Response:
    disposition = "attachment" if download else "inline"
    return Response(
        pdf.pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'{disposition}; filename="{pdf.number}-{pdf.locale}.pdf"',
            "ETag": f'"{pdf.sha256}"',
            "Cache-Control": "private, max-age=3600",
        },
    )


def _refusal_page(error: TallyError) -> HTMLResponse:
    status = 410 if isinstance(error, InvoiceLinkExpired) else 422 if isinstance(error, UnknownLocale) else 404
    title = "This invoice link has expired" if status == 410 else "This invoice link does not work"
    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='robots' content='noindex'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;color:#1d1d1f}}"
        "code{background:#f3f4f6;padding:1px 4px}</style></head><body>"
        f"<h1>{title}</h1><p>{escape(error.message)}. Please ask the sender of the invoice for a new link.</p>"
        f"<p>Error code: <code>{error.code}</code></p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


async def _hosted_page(
    session: AsyncSession, settings: Settings, document: InvoiceDocument, pdf_href: str, page_url: str
) -> HostedPage:
    """The page's pay button, when collection is on and the invoice's PaymentIntent waits for the
    customer. Stripe unreachable: no button, and the page says online payment is unavailable (the
    invoice itself still shows; never a 5xx for it)."""
    gateway = stripe_gateway(settings)
    if gateway is None or not settings.stripe_publishable_key or document.status != "issued" or not document.amount_due:
        return HostedPage(pdf_href)
    intent = await documents.payable_intent(session, document.invoice_id)
    if intent is None:
        return HostedPage(pdf_href)
    try:
        secret = await client_secret_of(gateway, intent)
    except (StripeUnavailable, stripe.StripeError):
        logger.warning("hosted invoice page: Stripe did not give the PaymentIntent's client secret", exc_info=True)
        return HostedPage(pdf_href, payment_unavailable=True)
    if not secret:
        return HostedPage(pdf_href)
    return HostedPage(pdf_href, Payment(settings.stripe_publishable_key, secret, page_url))


@router.get("/i/{token}", include_in_schema=False)
async def hosted_invoice(request: Request, token: str, session: SessionDep, locale: str | None = None) -> Response:
    settings: Settings = request.app.state.settings
    try:
        invoice_id = read_link(settings.session_secret, token, as_of=datetime.now(UTC)).invoice_id
        document = await documents.invoice_document(session, invoice_id, seller=seller_of(settings), locale=locale)
    except InvoiceNotFound:
        return _refusal_page(InvoiceLinkInvalid("this invoice link is not valid", field="token"))
    except TallyError as error:
        return _refusal_page(error)
    page_url = f"{(settings.public_base_url or str(request.base_url)).rstrip('/')}/i/{token}"
    query = f"?locale={locale}" if locale else ""
    html = render_html(document, await _hosted_page(session, settings, document, f"/i/{token}/pdf{query}", page_url))
    # Stripe.js needs its own origin; everything else stays as strict as the console's pages.
    csp = (
        "default-src 'self'; script-src 'self' 'unsafe-inline' https://js.stripe.com; "
        "frame-src https://js.stripe.com https://hooks.stripe.com; connect-src 'self' https://api.stripe.com; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: https://*.stripe.com; object-src 'none'; "
        "frame-ancestors 'none'"
    )
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "private, no-store",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": csp,
        },
    )


@router.get("/i/{token}/pdf", include_in_schema=False)
async def hosted_invoice_pdf(request: Request, token: str, session: SessionDep, locale: str | None = None) -> Response:
    settings: Settings = request.app.state.settings
    try:
        invoice_id = read_link(settings.session_secret, token, as_of=datetime.now(UTC)).invoice_id
        pdf = await documents.invoice_pdf(
            session, invoice_id, seller=seller_of(settings), as_of=datetime.now(UTC), locale=locale
        )
    except InvoiceNotFound:
        return _refusal_page(InvoiceLinkInvalid("this invoice link is not valid", field="token"))
    except TallyError as error:
        return _refusal_page(error)
    await session.commit()
    return pdf_response(pdf, download=False)


@dataclass(frozen=True)
class DocumentKind:
    """A kind of document a signed-in viewer may download: whose it is, and how it is rendered."""

    what: str
    field: str
    customer_of: Callable[[AsyncSession, uuid.UUID], Awaitable[uuid.UUID | None]]
    render: Callable[..., Awaitable[documents.InvoicePdf]]


INVOICE = DocumentKind("invoice", "invoiceId", documents.invoice_customer, documents.invoice_pdf)
CREDIT_NOTE = DocumentKind("credit note", "creditNoteId", documents.credit_note_customer, documents.credit_note_pdf)


async def viewer_pdf(
    session: AsyncSession,
    settings: Settings,
    viewer: Viewer,
    kind: DocumentKind,
    document_id: uuid.UUID,
    locale: str | None,
) -> documents.InvoicePdf:
    """The PDF for a signed-in viewer: staff, or the document's own customer (anyone else: not found)."""
    if locale is not None:
        check_locale(locale)
    customer_id = await kind.customer_of(session, document_id)
    if customer_id is None or not viewer.can(Capability.READ_INVOICES) or not viewer.may_see(customer_id):
        raise InvoiceNotFound(f"no {kind.what} {document_id}", field=kind.field)
    pdf = await kind.render(session, document_id, seller=seller_of(settings), as_of=datetime.now(UTC), locale=locale)
    await session.commit()
    return pdf


async def _download(
    request: Request, raw_id: str, session: AsyncSession, locale: str | None, kind: DocumentKind
) -> Response:
    """A document's PDF for the signed-in viewer: 404 for a malformed id or one they may not see,
    422 for an unknown locale."""
    viewer = await authenticate(request, session)
    not_found = HTTPException(404, detail={"code": "NOT_FOUND", "message": f"no such {kind.what}"})
    try:
        found = uuid.UUID(raw_id)
    except ValueError:
        raise not_found from None
    try:
        pdf = await viewer_pdf(session, request.app.state.settings, viewer, kind, found, locale)
    except UnknownLocale as error:
        raise HTTPException(422, detail={"code": error.code, "field": error.field, "message": error.message}) from None
    except InvoiceNotFound:
        raise not_found from None
    return pdf_response(pdf, download=True)


@router.get("/v1/invoices/{invoice_id}/pdf", summary="An invoice's PDF (staff, or the invoice's own customer)")
async def invoice_pdf(request: Request, invoice_id: str, session: SessionDep, locale: str | None = None) -> Response:
    return await _download(request, invoice_id, session, locale, INVOICE)


@router.get("/v1/credit-notes/{note_id}/pdf", summary="A credit note's PDF (staff, or the note's own customer)")
async def credit_note_pdf(request: Request, note_id: str, session: SessionDep, locale: str | None = None) -> Response:
    return await _download(request, note_id, session, locale, CREDIT_NOTE)
