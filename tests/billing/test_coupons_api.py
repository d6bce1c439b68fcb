"""Coupons through GraphQL: create, list, archive, apply (dry run first) and remove, the
customer's discounts and the upcoming invoice that shows them; refusals as field errors that
write nothing, hostile input, and who may do what."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.conftest import graphql

ERRORS = "userErrors { field code message }"
COUPON = """id code name percentOff amountOff { amount currency } appliesTo duration durationPeriods
  maxRedemptions redemptions redeemBy active archivedAt"""
CREATE = (
    f"""mutation($input: CreateCouponInput!) {{ createCoupon(input: $input) {{ coupon {{ {COUPON} }} {ERRORS} }} }}"""
)
ARCHIVE = f"""mutation($input: ArchiveCouponInput!) {{ archiveCoupon(input: $input) {{ coupon {{ code active }} {ERRORS} }} }}"""
DISCOUNT = """discount { id coupon { code } periods periodsUsed periodsLeft removed }
  upcomingInvoice { total { amount } lines { kind description amount { amount } } }"""
APPLY = f"""mutation($input: ApplyCouponInput!) {{ applyCoupon(input: $input) {{ {DISCOUNT} {ERRORS} }} }}"""
REMOVE = f"""mutation($input: RemoveDiscountInput!) {{ removeDiscount(input: $input) {{ {DISCOUNT} {ERRORS} }} }}"""
CUSTOMER = """query($id: ID!) { customer(id: $id) {
  discounts { coupon { code percentOff } periods periodsLeft }
  upcomingInvoice { total { amount } lines { kind description amount { amount } } } } }"""
LIST = f"query {{ coupons {{ {COUPON} }} }}"
WRITES = ("coupons", "customer_discounts", "discount_periods", "invoices")


async def counts(session: AsyncSession) -> dict[str, int]:
    return {table: (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() for table in WRITES}


async def ask(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await graphql(client, token, query, variables)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


@pytest.fixture
async def customer(client: httpx.AsyncClient, catalog: None, token_for) -> str:
    admin = await token_for("admin")
    created = await ask(
        client,
        admin,
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }",
        {"i": {"externalId": "org_coupons", "name": "Coupons", "currency": "USD", "planKey": "pro"}},
    )
    return created["createCustomer"]["customer"]["id"]


def coupon_input(**changes: Any) -> dict[str, Any]:
    return {"code": "LAUNCH25", "name": "Launch offer", "duration": "REPEATING", "durationPeriods": 3,
            "percentOff": "25", **changes}  # fmt: skip


async def test_a_coupon_is_created_listed_applied_after_a_dry_run_shown_and_removed(
    client: httpx.AsyncClient, customer: str, token_for, session: AsyncSession
) -> None:
    finance = await token_for("finance")
    created = (await ask(client, finance, CREATE, {"input": coupon_input()}))["createCoupon"]
    assert created["userErrors"] == []
    assert created["coupon"] | {"id": None} == {
        "id": None,
        "code": "LAUNCH25",
        "name": "Launch offer",
        "percentOff": "25",
        "amountOff": None,
        "appliesTo": [],
        "duration": "REPEATING",
        "durationPeriods": 3,
        "maxRedemptions": None,
        "redemptions": 0,
        "redeemBy": None,
        "active": True,
        "archivedAt": None,
    }
    before = await counts(session)
    apply_input = {"customerId": customer, "code": "launch25", "idempotencyKey": "apply-1"}
    preview = (await ask(client, finance, APPLY, {"input": apply_input | {"dryRun": True}}))["applyCoupon"]
    assert preview["userErrors"] == []
    assert preview["discount"] | {"id": None} == {
        "id": None,
        "coupon": {"code": "LAUNCH25"},
        "periods": 3,
        "periodsUsed": 0,
        "periodsLeft": 3,
        "removed": False,
    }
    # The Pro plan's next base fee, 20.00: a quarter off.
    lines = preview["upcomingInvoice"]["lines"]
    assert lines[-1] == {
        "kind": "DISCOUNT",
        "description": "Discount LAUNCH25: Launch offer, 25% off (1 of 3)",
        "amount": {"amount": "-5.00"},
    }
    assert await counts(session) == before, "a dry run writes nothing"

    applied = (await ask(client, finance, APPLY, {"input": apply_input}))["applyCoupon"]
    assert applied["userErrors"] == [] and applied["upcomingInvoice"] == preview["upcomingInvoice"]
    again = (await ask(client, finance, APPLY, {"input": apply_input}))["applyCoupon"]
    assert again["discount"]["id"] == applied["discount"]["id"], "a retry returns the first discount"
    listed = (await ask(client, finance, LIST, {}))["coupons"]
    assert [(c["code"], c["redemptions"]) for c in listed] == [("LAUNCH25", 1)]

    viewer = await ask(client, await token_for("customer", "org_coupons"), CUSTOMER, {"id": customer})
    assert viewer["customer"]["discounts"] == [{"coupon": {"code": "LAUNCH25", "percentOff": "25"}, "periods": 3,
                                                "periodsLeft": 3}]  # fmt: skip
    assert viewer["customer"]["upcomingInvoice"]["lines"][-1]["kind"] == "DISCOUNT", "the customer sees it too"

    remove_input = {"customerId": customer, "discountId": applied["discount"]["id"]}
    dry = (await ask(client, finance, REMOVE, {"input": remove_input | {"dryRun": True}}))["removeDiscount"]
    assert dry["discount"]["removed"] is True
    assert "DISCOUNT" not in [line["kind"] for line in dry["upcomingInvoice"]["lines"]]
    assert len((await ask(client, finance, CUSTOMER, {"id": customer}))["customer"]["discounts"]) == 1, "dry run"
    removed = (await ask(client, finance, REMOVE, {"input": remove_input}))["removeDiscount"]
    assert (removed["userErrors"], removed["discount"]["periodsLeft"]) == ([], 0)
    assert (await ask(client, finance, CUSTOMER, {"id": customer}))["customer"]["discounts"] == []

    coupon_id = created["coupon"]["id"]
    archived = (await ask(client, finance, ARCHIVE, {"input": {"couponId": coupon_id}}))["archiveCoupon"]
    assert archived == {"coupon": {"code": "LAUNCH25", "active": False}, "userErrors": []}
    assert (await ask(client, finance, LIST.replace("coupons {", "coupons(includeArchived: false) {"), {}))[
        "coupons"
    ] == []


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"percentOff": "101"}, "percentOff", "INVALID"),
        ({"percentOff": "-5"}, "percentOff", "INVALID"),
        ({"percentOff": "1e400"}, "percentOff", "INVALID"),
        ({"percentOff": None, "amountOff": "1e30", "currency": "USD"}, "amountOff", "INVALID"),
        ({"percentOff": None, "amountOff": "99999999999999999999", "currency": "USD"}, "amountOff", "INVALID"),
        ({"percentOff": None, "amountOff": "5", "currency": "???"}, "currency", "INVALID"),
        ({"code": "X" * 10_000}, "code", "INVALID"),
        ({"name": "n" * 10_000}, "name", "INVALID"),
        ({"appliesTo": ["requests", "nope"]}, "appliesTo", "INVALID"),
        ({"durationPeriods": 100_000}, "durationPeriods", "INVALID"),
        ({"maxRedemptions": -1}, "maxRedemptions", "INVALID"),
        ({"redeemBy": "2001-01-01T00:00:00Z"}, "redeemBy", "INVALID"),
    ],
)
async def test_a_bad_coupon_is_a_field_error_and_writes_nothing(
    client: httpx.AsyncClient, catalog: None, token_for, session: AsyncSession, changes: dict, field: str, code: str
) -> None:
    finance = await token_for("finance")
    payload = (await ask(client, finance, CREATE, {"input": coupon_input(**changes)}))["createCoupon"]
    assert payload["coupon"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [([field], code)], payload["userErrors"]
    assert (await session.execute(text("SELECT count(*) FROM coupons"))).scalar_one() == 0


@pytest.mark.parametrize("value", ["abc", "", "1,5", "NaN", "Infinity"])
async def test_a_percentage_that_is_not_a_decimal_is_refused_by_the_schema(
    client: httpx.AsyncClient, catalog: None, token_for, session: AsyncSession, value: str
) -> None:
    response = await graphql(client, await token_for("finance"), CREATE, {"input": coupon_input(percentOff=value)})
    body = response.json()
    assert "errors" in body or body["data"]["createCoupon"]["userErrors"][0]["field"] == ["percentOff"], body
    assert (await session.execute(text("SELECT count(*) FROM coupons"))).scalar_one() == 0


async def test_applying_refuses_unknown_expired_foreign_and_oversized_codes_and_writes_nothing(
    client: httpx.AsyncClient, customer: str, token_for, session: AsyncSession
) -> None:
    finance = await token_for("finance")
    euros = coupon_input(code="EURO5", percentOff=None, amountOff="5", currency="EUR", duration="ONCE",
                         durationPeriods=None)  # fmt: skip
    assert (await ask(client, finance, CREATE, {"input": euros}))["createCoupon"]["userErrors"] == []
    full = coupon_input(code="FULL", maxRedemptions=1)
    assert (await ask(client, finance, CREATE, {"input": full}))["createCoupon"]["userErrors"] == []
    await session.execute(text("UPDATE coupons SET redemptions = 1 WHERE code = 'FULL'"))
    await session.commit()
    before = await counts(session)
    for code, expected in [
        ("NOPE", ("code", "NOT_FOUND")),
        ("EURO5", ("code", "INVALID")),
        ("FULL", ("code", "COUPON_UNAVAILABLE")),
        ("Z" * 10_000, ("code", "NOT_FOUND")),
    ]:
        payload = (await ask(client, finance, APPLY, {"input": {"customerId": customer, "code": code,
                                                                "idempotencyKey": code[:40]}}))["applyCoupon"]  # fmt: skip
        assert [(e["field"][0], e["code"]) for e in payload["userErrors"]] == [expected]
        assert payload["discount"] is None
    long_key = {"customerId": customer, "code": "FULL", "idempotencyKey": "k" * 10_000}
    payload = (await ask(client, finance, APPLY, {"input": long_key}))["applyCoupon"]
    assert [e["field"] for e in payload["userErrors"]] == [["idempotencyKey"]]
    bad_id = {"customerId": customer, "discountId": "not-a-uuid"}
    payload = (await ask(client, finance, REMOVE, {"input": bad_id}))["removeDiscount"]
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [(["discountId"], "NOT_FOUND")]
    assert await counts(session) == before


async def test_customers_and_viewers_may_not_create_or_apply_coupons(
    client: httpx.AsyncClient, customer: str, token_for
) -> None:
    for role, customer_key in [("customer", "org_coupons"), ("viewer", None)]:
        token = await token_for(role, customer_key)
        for query, variables in [
            (CREATE, {"input": coupon_input()}),
            (APPLY, {"input": {"customerId": customer, "code": "LAUNCH25", "idempotencyKey": "k"}}),
        ]:
            body = (await graphql(client, token, query, variables)).json()
            assert body.get("data") is None or not any(body["data"].values()), body
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
