"""updateCustomer and Customer.billingDetails / billingDetailsHistory through GraphQL: partial
changes, explicit nulls, the dry run, who may change what (a customer token its own details, not
its tax exemption; a viewer nothing), and hostile input (oversized text, malformed emails, an
unknown locale, a three-letter country, a thousand invoice emails, concurrent changes)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.service import NewCustomer, create_customer
from tests.conftest import graphql, now

UPDATE = """mutation($i: UpdateCustomerInput!) { updateCustomer(input: $i) {
  dryRun
  customer { id name }
  billingDetails { name email legalName addressee address { line1 line2 city postalCode region country }
    taxId taxExemption invoiceEmails recipients locale }
  change { sequence fields before after actor }
  userErrors { field code message } } }"""
DETAILS = """query($id: ID!) { customer(id: $id) {
  billingDetails { name legalName address { line1 city postalCode country } taxId taxExemption invoiceEmails
    recipients locale }
  billingDetailsHistory { sequence changedAt fields before after actor } } }"""


@pytest.fixture
async def acme(session: AsyncSession) -> str:
    customer = await create_customer(
        session, NewCustomer(external_id="org_acme", name="Acme", currency="EUR", email="ap@acme.test"), as_of=now()
    )
    await create_customer(session, NewCustomer(external_id="org_other", name="Other", currency="EUR"), as_of=now())
    await session.commit()
    return str(customer.id)


async def ask(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await graphql(client, token, query, variables)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


async def update(client: httpx.AsyncClient, token: str, customer_id: str, **fields: Any) -> dict[str, Any]:
    data = await ask(client, token, UPDATE, {"i": {"customerId": customer_id, **fields}})
    return data["updateCustomer"]


async def changes(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM customer_billing_detail_changes"))).scalar_one())


async def test_staff_review_then_change_billing_details_and_see_the_history(
    client: httpx.AsyncClient, acme: str, token_for, session: AsyncSession
) -> None:
    support = await token_for("support")
    order = {
        "legalName": "Acme Hellas AE",
        "address": {"line1": "Odos Ermou 1", "city": "Athens", "postalCode": "105 63", "country": "gr"},
        "taxId": "el 094 259 216",
        "locale": "en",
        "invoiceEmails": ["billing@acme.test", "BILLING@acme.test", "cfo@acme.test"],
    }
    preview = await update(client, support, acme, **order, dryRun=True)
    assert preview["userErrors"] == [] and preview["dryRun"] is True
    assert preview["change"]["sequence"] is None
    assert preview["change"]["fields"] == [
        "legalName",
        "address.line1",
        "address.city",
        "address.postalCode",
        "address.country",
        "taxId",
        "invoiceEmails",
    ], "the locale was en already: not a change"
    assert preview["change"]["after"]["taxId"] == "EL094259216"
    assert preview["billingDetails"]["invoiceEmails"] == ["billing@acme.test", "cfo@acme.test"]
    assert await changes(session) == 0, "a dry run writes nothing"
    unchanged = (await ask(client, support, DETAILS, {"id": acme}))["customer"]["billingDetails"]
    assert unchanged["legalName"] is None and unchanged["recipients"] == ["ap@acme.test"]

    done = await update(client, support, acme, **order)
    assert done["userErrors"] == [] and done["change"]["fields"] == preview["change"]["fields"]
    assert done["change"]["actor"].startswith("token:"), "who changed them, for staff"
    assert done["billingDetails"]["address"] == {
        "line1": "Odos Ermou 1",
        "line2": None,
        "city": "Athens",
        "postalCode": "105 63",
        "region": None,
        "country": "GR",
    }
    assert done["billingDetails"]["addressee"] == "Acme Hellas AE"

    again = await update(client, support, acme, **order)
    assert again["change"] is None and again["userErrors"] == [], "the same change again changes nothing"
    assert await changes(session) == 1

    partial = await update(client, support, acme, address={"line2": "3rd floor"}, taxExemption="REVERSE_CHARGE")
    assert partial["userErrors"] == []
    assert partial["billingDetails"]["address"]["line1"] == "Odos Ermou 1", "address fields not given are kept"
    assert partial["change"]["before"] == {"address.line2": None, "taxExemption": "none"}
    assert partial["change"]["after"] == {"address.line2": "3rd floor", "taxExemption": "reverse_charge"}

    cleared = await update(client, support, acme, legalName=None, invoiceEmails=None, taxExemption="NONE")
    assert cleared["billingDetails"]["legalName"] is None
    assert cleared["billingDetails"]["recipients"] == ["ap@acme.test"], "no invoice emails: the customer's email"

    customer = (await ask(client, support, DETAILS, {"id": acme}))["customer"]
    history = customer["billingDetailsHistory"]
    assert [len(row["fields"]) for row in history] == [3, 2, 7], "newest first"
    assert history[0]["sequence"] > history[1]["sequence"] > history[2]["sequence"]
    assert history[2]["fields"] == done["change"]["fields"], "in the form's order"
    assert all(row["actor"] for row in history), "staff see who changed them"

    gone = await update(client, support, acme, address=None)
    assert gone["billingDetails"]["address"] == dict.fromkeys(
        ("line1", "line2", "city", "postalCode", "region", "country")
    )
    assert set(gone["change"]["fields"]) == {
        "address.line1",
        "address.line2",
        "address.city",
        "address.postalCode",
        "address.country",
    }


async def test_a_customer_token_changes_its_own_details_but_not_its_tax_exemption(
    client: httpx.AsyncClient, acme: str, token_for, session: AsyncSession
) -> None:
    own = await token_for("customer", "org_acme")
    done = await update(client, own, acme, address={"city": "Lyon", "country": "FR"}, locale="fr")
    assert done["userErrors"] == [] and done["billingDetails"]["locale"] == "fr"
    assert done["change"]["actor"] is None, "who changed them is for staff"
    history = (await ask(client, own, DETAILS, {"id": acme}))["customer"]["billingDetailsHistory"]
    assert [row["actor"] for row in history] == [None]

    exempt = await update(client, own, acme, taxExemption="EXEMPT")
    assert [(e["field"], e["code"]) for e in exempt["userErrors"]] == [(["taxExemption"], "FORBIDDEN")]
    finance = await ask(client, await token_for("finance"), DETAILS, {"id": acme})
    assert finance["customer"]["billingDetails"]["taxExemption"] == "NONE"

    [other_id] = (
        (await session.execute(text("SELECT id FROM customers WHERE external_id = 'org_other'"))).scalars().all()
    )
    theirs = await update(client, own, str(other_id), legalName="Taken over")
    assert [(e["field"], e["code"]) for e in theirs["userErrors"]] == [(["customerId"], "NOT_FOUND")]
    assert await changes(session) == 1


async def test_a_viewer_may_not_change_billing_details(client: httpx.AsyncClient, acme: str, token_for) -> None:
    viewer = await token_for("viewer")
    response = (await graphql(client, viewer, UPDATE, {"i": {"customerId": acme, "legalName": "X"}})).json()
    assert response["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    details = (await ask(client, viewer, DETAILS, {"id": acme}))["customer"]["billingDetails"]
    assert details["legalName"] is None, "a viewer reads them"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"legalName": "A" * 100_000}, [(["legalName"], "TOO_LONG")]),
        (
            {"address": {"line1": "x" * 5_000, "postalCode": "9" * 500}},
            [
                (["address.line1"], "TOO_LONG"),
                (["address.postalCode"], "TOO_LONG"),
            ],
        ),
        (
            {"invoiceEmails": ["ok@acme.test", "not an email", "a@b", "<script>@x.y"]},
            [
                (["invoiceEmails[1]"], "INVALID_EMAIL"),
                (["invoiceEmails[2]"], "INVALID_EMAIL"),
            ],
        ),
        ({"locale": "xx"}, [(["locale"], "UNKNOWN_LOCALE")]),
        ({"address": {"country": "ZZZ"}}, [(["address.country"], "UNKNOWN_COUNTRY")]),
        ({"address": {"country": "EU"}}, [(["address.country"], "UNKNOWN_COUNTRY")]),
        ({"invoiceEmails": [f"user{i}@acme.test" for i in range(1000)]}, [(["invoiceEmails"], "LIMIT_EXCEEDED")]),
        ({"address": {"country": "DE"}, "taxId": "FR40303265045"}, [(["taxId"], "TAX_ID_COUNTRY_MISMATCH")]),
        ({"name": "   "}, [(["name"], "INVALID")]),
        ({"name": None}, [(["name"], "INVALID")]),
        ({"email": "ap@acme"}, [(["email"], "INVALID_EMAIL")]),
        ({"legalName": "Acme\u202eSAS"}, [(["legalName"], "INVALID")]),
        (
            {"legalName": "Fine", "locale": "xx", "address": {"country": "ZZZ"}},
            [
                (["address.country"], "UNKNOWN_COUNTRY"),
                (["locale"], "UNKNOWN_LOCALE"),
            ],
        ),
    ],
)
async def test_hostile_input_is_a_field_error_and_writes_nothing(
    client: httpx.AsyncClient, acme: str, token_for, session: AsyncSession, fields: dict[str, Any], expected: list
) -> None:
    admin = await token_for("admin")
    refused = await update(client, admin, acme, **fields)
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == expected
    assert refused["customer"] is None and refused["change"] is None
    assert await changes(session) == 0
    details = (await ask(client, admin, DETAILS, {"id": acme}))["customer"]["billingDetails"]
    assert details["name"] == "Acme" and details["legalName"] is None and details["locale"] == "en"


async def test_an_unknown_tax_exemption_is_refused_by_the_schema(
    client: httpx.AsyncClient, acme: str, token_for
) -> None:
    admin = await token_for("admin")
    response = (await graphql(client, admin, UPDATE, {"i": {"customerId": acme, "taxExemption": "SOMETIMES"}})).json()
    assert "errors" in response and "TaxExemption" in response["errors"][0]["message"]


async def test_concurrent_updates_leave_a_consistent_history(
    client: httpx.AsyncClient, acme: str, token_for, session: AsyncSession
) -> None:
    finance = await token_for("finance")
    answers = await asyncio.gather(
        *(update(client, finance, acme, legalName=f"Acme {i}", address={"city": f"City {i % 4}"}) for i in range(16))
    )
    assert all(answer["userErrors"] == [] for answer in answers)
    history = list(reversed((await ask(client, finance, DETAILS, {"id": acme}))["customer"]["billingDetailsHistory"]))
    assert len(history) == 16, "each request changed the legal name, once"
    replayed: dict[str, Any] = {"legalName": None, "address.city": None}
    for row in history:
        assert {field: replayed[field] for field in row["fields"]} == row["before"], "each starts where the last ended"
        replayed.update(row["after"])
    details = (await ask(client, finance, DETAILS, {"id": acme}))["customer"]["billingDetails"]
    assert (details["legalName"], details["address"]["city"]) == (replayed["legalName"], replayed["address.city"])
