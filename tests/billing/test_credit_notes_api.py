"""createCreditNote, Invoice.creditedAmount / creditNotes and the creditNotes query over HTTP:
a dry run answers and writes nothing, a note is made and retried, the invoice shows it, refusals
are field errors with nothing written, and a customer sees only their own notes."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings
from tests.billing.scenario import opening_invoice
from tests.conftest import graphql

NOTE_FIELDS = "id number invoiceNumber amount { amount currency } method reason note status lines { position invoiceLinePosition description amount { amount } }"
CREATE = f"""mutation($i: CreateCreditNoteInput!) {{ createCreditNote(input: $i) {{
  creditNote {{ {NOTE_FIELDS} }} invoice {{ number creditedAmount {{ amount }} }}
  userErrors {{ field code message }} }} }}"""
INVOICE = """query($n: String!) { invoice(number: $n) {
  creditedAmount { amount } amountStillDue { amount } creditNotes { number amount { amount } } } }"""
LIST = f"""query($c: ID!, $first: Int, $after: String) {{ creditNotes(customerId: $c, first: $first, after: $after) {{
  edges {{ cursor node {{ {NOTE_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""


async def ask(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await graphql(client, token, query, variables)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


async def notes_written(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM credit_notes"))).scalar_one())


def note_input(invoice_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "invoiceId": invoice_id,
        "method": "CREDIT",
        "reason": "DUPLICATE",
        "idempotencyKey": "cn-api-1",
        "amount": "2.50",
        "note": "billed twice",
        **changes,
    }


async def test_a_note_previewed_made_retried_and_shown_on_its_invoice(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    billing_catalog: None,
    token_for,
) -> None:
    invoice = await opening_invoice(session, sessions, settings)
    invoice_id, number, customer_id = str(invoice.id), f"INV-{invoice.number:06d}", str(invoice.customer_id)
    finance = await token_for("finance")
    preview = (await ask(client, finance, CREATE, {"i": note_input(invoice_id, dryRun=True)}))["createCreditNote"]
    assert preview["userErrors"] == [] and preview["creditNote"]["number"] is None
    assert preview["creditNote"]["amount"] == {"amount": "2.50", "currency": "USD"}
    assert await notes_written(session) == 0
    made = (await ask(client, finance, CREATE, {"i": note_input(invoice_id)}))["createCreditNote"]
    note = made["creditNote"]
    assert (note["number"], note["invoiceNumber"], note["method"], note["reason"], note["status"]) == (
        "CN-000001",
        number,
        "CREDIT",
        "DUPLICATE",
        "ISSUED",
    )
    assert [(line["invoiceLinePosition"], line["amount"]["amount"]) for line in note["lines"]] == [(0, "2.50")]
    assert made["invoice"]["creditedAmount"] == {"amount": "2.50"}
    again = (await ask(client, finance, CREATE, {"i": note_input(invoice_id)}))["createCreditNote"]
    assert again["creditNote"]["id"] == note["id"] and await notes_written(session) == 1
    shown = (await ask(client, finance, INVOICE, {"n": number}))["invoice"]
    assert shown == {
        "creditedAmount": {"amount": "2.50"},
        "amountStillDue": {"amount": "10.00"},
        "creditNotes": [{"number": "CN-000001", "amount": {"amount": "2.50"}}],
    }
    await ask(
        client,
        finance,
        CREATE,
        {
            "i": note_input(
                invoice_id,
                idempotencyKey="cn-api-2",
                method="REDUCE_DUE",
                amount=None,
                lines=[{"position": 0, "amount": "1.00"}],
            )
        },
    )
    reduced = (await ask(client, finance, INVOICE, {"n": number}))["invoice"]
    assert (reduced["creditedAmount"], reduced["amountStillDue"]) == ({"amount": "3.50"}, {"amount": "9.00"})
    listed = (await ask(client, finance, LIST, {"c": customer_id, "first": 1}))["creditNotes"]
    assert [edge["node"]["number"] for edge in listed["edges"]] == ["CN-000002"] and listed["pageInfo"]["hasNextPage"]
    rest = (await ask(client, finance, LIST, {"c": customer_id, "after": listed["pageInfo"]["endCursor"]}))[
        "creditNotes"
    ]
    assert [edge["node"]["number"] for edge in rest["edges"]] == ["CN-000001"]
    for unknown in ("00000000-0000-0000-0000-000000000000", "not-an-id", "x" * 10_000):
        assert (await ask(client, finance, LIST, {"c": unknown}))["creditNotes"] is None
    own = await token_for("customer", "acme")
    assert len((await ask(client, own, LIST, {"c": customer_id}))["creditNotes"]["edges"]) == 2
    refused = await graphql(client, own, CREATE, {"i": note_input(invoice_id, idempotencyKey="mine")})
    assert refused.json()["data"] is None or refused.json()["data"]["createCreditNote"] is None
    assert await notes_written(session) == 2


async def test_bad_notes_are_field_errors_that_write_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessions: Any,
    settings: Settings,
    billing_catalog: None,
    token_for,
) -> None:
    invoice = await opening_invoice(session, sessions, settings)
    invoice_id = str(invoice.id)
    finance = await token_for("finance")
    cases = [
        ({"amount": "0"}, "INVALID", "amount"),
        ({"amount": "-1"}, "INVALID", "amount"),
        ({"amount": "10.01"}, "CREDIT_EXCEEDED", "amount"),
        ({"amount": "1" + "0" * 400}, "INVALID", "amount"),
        ({"amount": None, "lines": [{"position": 3, "amount": "1"}]}, "NOT_FOUND", "lines.0.position"),
        ({"note": "n" * 50_000}, "INVALID", "note"),
        ({"idempotencyKey": "k" * 50_000}, "INVALID", "idempotencyKey"),
        ({"method": "REFUND"}, "INVALID", "method"),
        ({"invoiceId": "not-an-id"}, "NOT_FOUND", "invoiceId"),
        ({"invoiceId": "00000000-0000-0000-0000-000000000000"}, "NOT_FOUND", "invoiceId"),
    ]
    for changes, code, field in cases:
        answer = (await ask(client, finance, CREATE, {"i": note_input(invoice_id, **changes)}))["createCreditNote"]
        assert answer["creditNote"] is None, changes
        assert [(e["code"], e["field"]) for e in answer["userErrors"]] == [(code, [field])], changes
    void = """mutation($i: CloseInvoiceInput!) { voidInvoice(input: $i) { userErrors { code } } }"""
    voided = await ask(client, finance, void, {"i": {"invoiceId": invoice_id, "reason": "oops", "idempotencyKey": "v"}})
    assert voided["voidInvoice"]["userErrors"] == []
    on_void = (await ask(client, finance, CREATE, {"i": note_input(invoice_id)}))["createCreditNote"]
    assert [(e["code"], e["field"]) for e in on_void["userErrors"]] == [("INVOICE_VOID", ["invoiceId"])]
    assert await notes_written(session) == 0
