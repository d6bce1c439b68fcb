"""The money actions' GraphQL: a grant's dry run, voiding a grant, editing and deactivating a
promotion, and the audit log they write, with who may do each."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.conftest import graphql

CREATE_CUSTOMER = """mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } } }"""
GRANT = """mutation($i: GrantCreditsInput!) { grantCredits(input: $i) {
  grant { id amount { amount currency } remaining { amount } status } userErrors { field code message } } }"""
VOID = """mutation($i: VoidCreditGrantInput!) { voidCreditGrant(input: $i) {
  grant { status remaining { amount } } voided { amount currency } userErrors { field code message } } }"""
CREATE_PROMOTION = """mutation($i: CreatePromotionInput!) { createPromotion(input: $i) { promotion { id } } }"""
UPDATE_PROMOTION = """mutation($i: UpdatePromotionInput!) { updatePromotion(input: $i) {
  promotion { description maxRedemptions active } userErrors { field code message } } }"""
AUDIT = """query($f: AuditLogFilter, $after: String) { auditLog(filter: $f, first: 2, after: $after) {
  edges { node { action actor subjectType before after } } pageInfo { hasNextPage endCursor } } }"""


async def data(client: httpx.AsyncClient, token: str, query: str, variables: dict) -> dict:
    body = (await graphql(client, token, query, variables)).json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
async def customer_id(client: httpx.AsyncClient, catalog: None, token_for) -> str:  # type: ignore[no-untyped-def]
    admin = await token_for("admin")
    created = await data(
        client, admin, CREATE_CUSTOMER, {"i": {"externalId": "org_void", "name": "Void Co", "currency": "USD"}}
    )
    return created["createCustomer"]["customer"]["id"]


async def test_a_dry_run_grant_answers_the_grant_and_writes_nothing(
    client: httpx.AsyncClient,
    customer_id: str,
    token_for,
    session: AsyncSession,  # type: ignore[no-untyped-def]
) -> None:
    support = await token_for("support")
    grant = {"customerId": customer_id, "amount": "60", "reason": "sorry", "idempotencyKey": "k-1", "dryRun": True}
    answered = (await data(client, support, GRANT, {"i": grant}))["grantCredits"]
    assert answered["userErrors"] == [] and answered["grant"]["amount"] == {"amount": "60.00", "currency": "USD"}
    refused = (await data(client, support, GRANT, {"i": {**grant, "amount": "100.01"}}))["grantCredits"]
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [(["amount"], "LIMIT_EXCEEDED")]
    assert (await session.execute(text("SELECT count(*) FROM credit_grants"))).scalar_one() == 0
    made = (await data(client, support, GRANT, {"i": {**grant, "dryRun": False}}))["grantCredits"]
    assert made["grant"]["status"] == "ACTIVE", "the same key works for the grant itself after its dry run"


async def test_finance_voids_what_remains_of_a_grant_once(
    client: httpx.AsyncClient,
    customer_id: str,
    token_for,  # type: ignore[no-untyped-def]
) -> None:
    finance, support = await token_for("finance"), await token_for("support")
    grant = {"customerId": customer_id, "amount": "30", "reason": "goodwill", "idempotencyKey": "k-1"}
    grant_id = (await data(client, finance, GRANT, {"i": grant}))["grantCredits"]["grant"]["id"]
    void = {"grantId": grant_id, "reason": "granted twice", "idempotencyKey": "v-1"}
    other = {"externalId": "org_other", "name": "Other Co", "currency": "USD"}
    other_id = (await data(client, finance, CREATE_CUSTOMER, {"i": other}))["createCustomer"]["customer"]["id"]
    elsewhere = (await data(client, finance, VOID, {"i": {**void, "customerId": other_id}}))["voidCreditGrant"]
    assert [(e["field"], e["code"]) for e in elsewhere["userErrors"]] == [(["grantId"], "NOT_FOUND")], "not its grant"
    forbidden = (await graphql(client, support, VOID, {"i": void})).json()
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN", "support grants but does not void"
    preview = (await data(client, finance, VOID, {"i": {**void, "dryRun": True}}))["voidCreditGrant"]
    assert preview["voided"] == {"amount": "30.00", "currency": "USD"} and preview["grant"]["status"] == "VOIDED"
    voided = (await data(client, finance, VOID, {"i": void}))["voidCreditGrant"]
    assert voided["voided"]["amount"] == "30.00" and voided["grant"]["remaining"]["amount"] == "0.00"
    retried = (await data(client, finance, VOID, {"i": void}))["voidCreditGrant"]
    assert retried == voided, "the same key answers the first void"
    again = (await data(client, finance, VOID, {"i": {**void, "idempotencyKey": "v-2"}}))["voidCreditGrant"]
    assert [e["code"] for e in again["userErrors"]] == ["INVALID"] and "already voided" in again["userErrors"][0][
        "message"
    ]
    unknown = (await data(client, finance, VOID, {"i": {**void, "grantId": "nope"}}))["voidCreditGrant"]
    assert [(e["field"], e["code"]) for e in unknown["userErrors"]] == [(["grantId"], "NOT_FOUND")]


async def test_promotions_are_edited_and_deactivated_and_the_audit_log_pages(
    client: httpx.AsyncClient,
    catalog: None,
    token_for,  # type: ignore[no-untyped-def]
) -> None:
    admin, viewer = await token_for("admin"), await token_for("viewer")
    new = {"code": "FALL", "description": "Fall", "creditAmount": "10", "currency": "USD", "maxRedemptions": 5}
    promotion_id = (await data(client, admin, CREATE_PROMOTION, {"i": new}))["createPromotion"]["promotion"]["id"]
    edited = await data(client, admin, UPDATE_PROMOTION, {"i": {"promotionId": promotion_id, "maxRedemptions": None}})
    assert edited["updatePromotion"]["promotion"] == {"description": "Fall", "maxRedemptions": None, "active": True}
    off = await data(client, admin, UPDATE_PROMOTION, {"i": {"promotionId": promotion_id, "active": False}})
    assert off["updatePromotion"]["promotion"]["active"] is False
    forbidden = (await graphql(client, viewer, UPDATE_PROMOTION, {"i": {"promotionId": promotion_id}})).json()
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    first = (await data(client, viewer, AUDIT, {"f": {"action": "promotion."}}))["auditLog"]
    assert [e["node"]["action"] for e in first["edges"]] == ["promotion.deactivate", "promotion.update"]
    assert first["edges"][1]["node"]["before"] == {"max_redemptions": 5}
    assert first["pageInfo"]["hasNextPage"]
    rest = await data(client, viewer, AUDIT, {"f": {"action": "promotion."}, "after": first["pageInfo"]["endCursor"]})
    assert [e["node"]["action"] for e in rest["auditLog"]["edges"]] == ["promotion.create"]
    mine = (await data(client, viewer, AUDIT, {"f": {"actor": "nobody"}}))["auditLog"]
    assert mine["edges"] == []


async def test_a_customer_token_reads_no_audit_log(
    client: httpx.AsyncClient,
    customer_id: str,
    token_for,  # type: ignore[no-untyped-def]
) -> None:
    own = await token_for("customer", "org_void")
    refused = (await graphql(client, own, AUDIT, {})).json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
