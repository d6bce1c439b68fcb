"""`tally coupon create|list|apply` against a real database: outputs, a retry by key that applies
once, a dry run that writes nothing, refusals as one-line reasons with exit 1 and nothing written."""

from __future__ import annotations

import json

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.service import NewCustomer, create_customer
from tests.app.test_cli import run, scalar
from tests.conftest import now

__all__ = ["run"]


@pytest.fixture
async def customer(session: AsyncSession, catalog: None) -> None:
    await create_customer(
        session, NewCustomer(external_id="org_cli", name="CLI Co", currency="USD", plan_key="pro"), as_of=now()
    )
    await session.commit()


def test_a_coupon_is_created_listed_and_applied_once_by_key(run, database_url: str, customer: None) -> None:
    made = run("coupon", "create", "TOKENS20", "--name", "Token offer", "--percent-off", "20", "--meter", "tokens",
               "--duration", "repeating", "--periods", "3", "--max-redemptions", "10")  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "created TOKENS20: Token offer, 20% off tokens, 3 invoices, applied 0 / 10" in made.output
    listed = json.loads(run("coupon", "list", "--json").stdout)
    assert [(c["code"], c["off"], c["redemptions"]) for c in listed] == [("TOKENS20", "20% off tokens", 0)]

    preview = run("coupon", "apply", "org_cli", "tokens20", "--dry-run")
    assert preview.exit_code == 0 and "would take TOKENS20 (20% off tokens) off 3 invoice(s)" in preview.output
    assert scalar(database_url, "SELECT count(*) FROM customer_discounts") == 0
    applied = run("coupon", "apply", "org_cli", "TOKENS20", "--key", "k1")
    again = run("coupon", "apply", "org_cli", "TOKENS20", "--key", "k1")
    assert applied.exit_code == again.exit_code == 0 and "takes TOKENS20" in applied.output
    assert scalar(database_url, "SELECT redemptions FROM coupons") == 1, "the same key applies once"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("create", "BAD", "--name", "x", "--percent-off", "101"), "percentOff: must be more than 0 and at most 100"),
        (("create", "BAD", "--name", "x", "--percent-off", "abc"), "--percent-off: 'abc' is not a decimal number"),
        (("create", "BAD", "--name", "x", "--percent-off", "-5"), "percentOff: must be more than 0"),
        (("create", "BAD", "--name", "x", "--amount-off", "1e30", "--currency", "USD"), "amountOff:"),
        (("create", "X" * 10_000, "--name", "x", "--percent-off", "5"), "code: 3 to 64 letters"),
        (("apply", "org_cli", "NOPE"), "code: no coupon 'NOPE'"),
        (("apply", "nobody", "NOPE"), "customer:"),
    ],
)
def test_bad_input_is_one_line_with_exit_1_and_writes_nothing(
    run, database_url: str, customer: None, args: tuple[str, ...], reason: str
) -> None:
    result = run("coupon", *args)
    assert result.exit_code == 1 and reason in result.output.replace("\n", ""), result.output
    assert scalar(database_url, "SELECT count(*) FROM coupons") == 0
