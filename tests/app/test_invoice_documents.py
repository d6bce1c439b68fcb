"""The hosted invoice page and the PDF over HTTP: signed links (valid, tampered, expired, for no
invoice, absurd), the authenticated download, and the GraphQL link mutation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from billing.documents.links import sign_link
from customers.service import NewCustomer, create_customer
from tests.billing.documents.support import tiered_invoice
from tests.conftest import graphql

CREATE_LINK = """
mutation($input: CreateInvoiceLinkInput!) {
  createInvoiceLink(input: $input) { url expiresAt userErrors { field code message } }
}"""


@pytest.fixture
async def invoice(session: AsyncSession, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> uuid.UUID:
    found = await tiered_invoice(session, sessions, settings)
    return uuid.UUID(str(found.id))


async def create_link(client: httpx.AsyncClient, token: str, invoice_id: object, **more: object) -> dict:
    answer = await graphql(client, token, CREATE_LINK, {"input": {"invoiceId": str(invoice_id), **more}})
    assert answer.status_code == 200, answer.text
    assert "errors" not in answer.json(), answer.text
    return answer.json()["data"]["createInvoiceLink"]


async def test_a_customer_opens_the_hosted_page_and_its_pdf_without_signing_in(
    client: httpx.AsyncClient, token_for, invoice: uuid.UUID
) -> None:
    created = await create_link(client, await token_for("support"), invoice)
    assert created["userErrors"] == []
    assert created["url"].startswith("/i/")
    expires = datetime.fromisoformat(created["expiresAt"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    page = await client.get(created["url"])
    assert page.status_code == 200
    assert "Facture" in page.text and "INV-000002" in page.text and "Le Petit Atelier SARL" in page.text
    assert "1\u202f475,00\u00a0€" in page.text
    assert "noindex" in page.text and page.headers["referrer-policy"] == "no-referrer"
    assert "Payer maintenant" not in page.text  # collection is off: no pay button
    pdf = await client.get(created["url"] + "/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    english = await client.get(created["url"] + "?locale=en")
    assert "Amount due" in english.text and "€1,475.00" in english.text


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature altered
        lambda token: "x" + token,  # payload altered
        lambda token: token.split(".")[0],  # signature cut off
        lambda token: "A" * 60_000,  # absurdly long (httpx sends at most 64 KiB of URL)
        lambda token: "%00%ff<script>",  # junk
    ],
)
async def test_a_tampered_link_is_a_friendly_404_with_a_code(
    client: httpx.AsyncClient, token_for, invoice: uuid.UUID, mangle
) -> None:
    created = await create_link(client, await token_for("support"), invoice)
    token = created["url"].removeprefix("/i/")
    for suffix in ("", "/pdf"):
        answer = await client.get(f"/i/{mangle(token)}{suffix}")
        assert answer.status_code in (400, 404, 414), answer.text[:200]  # 400: the NUL the app refuses first
        if answer.status_code == 404:
            assert "INVOICE_LINK_INVALID" in answer.text and "text/html" in answer.headers["content-type"]
            assert "INV-" not in answer.text


async def test_an_expired_link_is_410_and_a_link_to_no_invoice_is_404(
    client: httpx.AsyncClient, settings: Settings, invoice: uuid.UUID
) -> None:
    expired = sign_link(settings.session_secret, invoice, days=1, as_of=datetime.now(UTC) - timedelta(days=2))
    for suffix in ("", "/pdf"):
        answer = await client.get(f"/i/{expired.token}{suffix}")
        assert answer.status_code == 410 and "INVOICE_LINK_EXPIRED" in answer.text
    nowhere = sign_link(settings.session_secret, uuid.uuid4(), days=5, as_of=datetime.now(UTC))
    answer = await client.get(f"/i/{nowhere.token}")
    assert answer.status_code == 404 and "INVOICE_LINK_INVALID" in answer.text
    forged = sign_link("another-secret", invoice, days=5, as_of=datetime.now(UTC))
    answer = await client.get(f"/i/{forged.token}/pdf")
    assert answer.status_code == 404 and "INVOICE_LINK_INVALID" in answer.text
    good = sign_link(settings.session_secret, invoice, days=5, as_of=datetime.now(UTC))
    answer = await client.get(f"/i/{good.token}?locale=xx")
    assert answer.status_code == 422 and "UNKNOWN_LOCALE" in answer.text


@pytest.mark.parametrize("days", [0, -1, 366, 10**9])
async def test_an_absurd_expiry_is_a_field_error(
    client: httpx.AsyncClient, token_for, invoice: uuid.UUID, days: int
) -> None:
    created = await create_link(client, await token_for("support"), invoice, expiresInDays=days)
    assert created["url"] is None
    assert created["userErrors"] == [
        {"field": ["expiresInDays"], "code": "EXPIRY_OUT_OF_RANGE", "message": "a link lasts 1 to 365 days"}
    ]


async def test_link_requests_for_unknown_locales_or_other_customers_invoices_are_refused(
    client: httpx.AsyncClient, session: AsyncSession, token_for, invoice: uuid.UUID
) -> None:
    support = await token_for("support")
    refused = await create_link(client, support, invoice, locale="klingon" * 1000)
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [(["locale"], "UNKNOWN_LOCALE")]
    for wrong in (uuid.uuid4(), "not-a-uuid"):
        refused = await create_link(client, support, wrong)
        assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [(["invoiceId"], "NOT_FOUND")]
    await create_customer(
        session, NewCustomer(external_id="other", name="Other", currency="EUR"), as_of=datetime.now(UTC)
    )
    await session.commit()
    other = await token_for("customer", "other")
    refused = await create_link(client, other, invoice)
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [(["invoiceId"], "NOT_FOUND")]
    own = await create_link(client, await token_for("customer", "atelier"), invoice, expiresInDays=365)
    assert own["userErrors"] == [] and own["url"].startswith("/i/")


async def test_the_pdf_download_is_for_staff_and_the_invoice_s_own_customer(
    client: httpx.AsyncClient, session: AsyncSession, token_for, invoice: uuid.UUID
) -> None:
    path = f"/v1/invoices/{invoice}/pdf"
    answer = await graphql(
        client,
        await token_for("viewer"),
        "query($n: String!) { invoice(number: $n) { pdfUrl dueAt } }",
        {"n": "INV-000002"},
    )
    assert answer.json()["data"]["invoice"]["pdfUrl"] == path
    assert answer.json()["data"]["invoice"]["dueAt"].startswith("2026-03-14")
    assert (await client.get(path)).status_code == 401
    staff = {"Authorization": f"Bearer {await token_for('viewer')}"}
    first = await client.get(path, headers=staff)
    assert first.status_code == 200 and first.content.startswith(b"%PDF-")
    assert 'filename="INV-000002-fr.pdf"' in first.headers["content-disposition"]
    own = {"Authorization": f"Bearer {await token_for('customer', 'atelier')}"}
    again = await client.get(path, headers=own)
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    await create_customer(
        session, NewCustomer(external_id="other", name="Other", currency="EUR"), as_of=datetime.now(UTC)
    )
    await session.commit()
    other = {"Authorization": f"Bearer {await token_for('customer', 'other')}"}
    assert (await client.get(path, headers=other)).json()["code"] == "NOT_FOUND"
    for bad in (f"/v1/invoices/{uuid.uuid4()}/pdf", "/v1/invoices/nope/pdf", f"/v1/invoices/{'9' * 5000}/pdf"):
        answer = await client.get(bad, headers=staff)
        assert answer.status_code in (404, 414) and answer.status_code < 500
    refused = await client.get(path + "?locale=zz", headers=staff)
    assert refused.status_code == 422 and refused.json()["code"] == "UNKNOWN_LOCALE"
    stored = await session.execute(text("SELECT count(*) FROM invoice_documents"))
    assert stored.scalar_one() == 1
