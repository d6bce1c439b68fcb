"""What a customer token may see, generated from the served schema: every root field, every field
of every type it reaches and every mutation, asked with customer A's token about customer A and
about customer B. Nothing of B may appear, nothing staff wrote or that names staff may appear,
and a field added later is asked about without anyone writing a test for it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    Undefined,
    build_client_schema,
    get_introspection_query,
    get_named_type,
    is_non_null_type,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from ledger import grants as credit
from ledger import promotions
from tests.conftest import graphql

STAFF = "staff:admin@example.com"
# Arguments of nested fields, by name: a nested field whose required argument is not here fails
# the test with its name, so that a new field is asked about rather than skipped.
NESTED_ARGUMENTS: dict[str, Any] = {
    "meter": "requests",
    "from": (datetime.now(UTC) - timedelta(days=60)).isoformat(),
    "to": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    "granularity": "DAY",
    "position": 0,
}
MAX_DEPTH = 9


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Limits wide enough for one query that asks for every field."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        env="test",
        tracing=False,
        secret_key="test-secret-key-for-signing-console-sessions",
        graphql_max_depth=30,
        graphql_max_tokens=100_000,
    )


@dataclass
class Party:
    """A customer's identifiers and texts: the strings that must never reach the other customer."""

    external_id: str
    name: str
    email: str
    customer_id: str = ""
    invoice_ids: tuple[str, ...] = ()
    invoice_numbers: tuple[str, ...] = ()
    promotion_code: str = ""
    other_ids: tuple[str, ...] = ()

    @property
    def identifiers(self) -> list[str]:
        return [self.customer_id, *self.invoice_ids, *self.other_ids]

    @property
    def texts(self) -> list[str]:
        return [self.external_id, *self.invoice_numbers, self.promotion_code]

    @property
    def secrets(self) -> list[str]:
        return [*self.identifiers, *self.texts, self.name, self.email]


@dataclass
class World:
    alpha: Party
    bravo: Party
    alpha_token: str
    admin_token: str
    internal_reasons: tuple[str, ...]


async def _admin(client: httpx.AsyncClient, token: str, query: str, variables: dict | None = None) -> dict:
    body = (await graphql(client, token, query, variables)).json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
async def world(
    client: httpx.AsyncClient,
    catalog: None,
    token_for,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> World:
    """Two Pro customers with invoices, credits granted by staff with internal reasons, a balance
    adjustment, a scheduled plan change, a promotion each, and usage."""
    admin = await token_for("admin")
    settings.backdate_max_days = 45  # started 40 days ago, so that invoices exist
    started = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    now = datetime.now(UTC)
    parties = {
        "alpha": Party("org_alpha_anvil", "Alpha Anvil Works", "billing@alpha-anvil.example"),
        "bravo": Party("org_bravo_bellows", "Bravo Bellows Hidden", "billing@bravo-bellows.example"),
    }
    reasons = []
    for key, party in parties.items():
        created = await _admin(
            client,
            admin,
            "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { customer { id } userErrors { code } } }",
            {
                "i": {
                    "externalId": party.external_id,
                    "name": party.name,
                    "email": party.email,
                    "currency": "USD",
                    "planKey": "pro",
                    "startedAt": started,
                }
            },
        )
        party.customer_id = created["createCustomer"]["customer"]["id"]
        reason = f"INTERNAL goodwill for {key}, ticket {key}-17, do not tell them"
        reasons.append(reason)
        grant = await credit.grant_credits(
            session,
            customer_id=uuid.UUID(party.customer_id),
            currency="USD",
            amount=500,
            reason=reason,
            actor=STAFF,
            idempotency_key=f"grant-{key}",
            as_of=now,
        )
        code = f"SECRET-{key.upper()}-CODE"
        promotion = await promotions.create_promotion(
            session,
            code=code,
            description="Welcome credit",
            credit_amount=300,
            currency="USD",
            actor=STAFF,
            as_of=now,
        )
        redeemed = await promotions.redeem(
            session,
            code=code,
            customer_id=uuid.UUID(party.customer_id),
            currency="USD",
            actor=STAFF,
            idempotency_key=f"promo-{key}",
            as_of=now,
        )
        await session.commit()
        party.promotion_code = code
        adjustment_reason = f"INTERNAL adjustment for {key}: finance override"
        reasons.append(adjustment_reason)
        adjusted = await _admin(
            client,
            admin,
            "mutation($i: AdjustBalanceInput!) { adjustBalance(input: $i) { entryId userErrors { code } } }",
            {"i": {"customerId": party.customer_id, "amount": "2", "reason": adjustment_reason, "idempotencyKey": key}},
        )
        await _admin(
            client,
            admin,
            "mutation($i: ChangePlanInput!) { changePlan(input: $i) { userErrors { code } } }",
            {
                "i": {
                    "customerId": party.customer_id,
                    "planKey": "team",
                    "effective": "PERIOD_END",
                    "idempotencyKey": key,
                }
            },
        )
        party.other_ids = (
            str(grant.id),
            str(promotion.id),
            str(redeemed.id),
            str(grant.transaction_id),
            adjusted["adjustBalance"]["entryId"],
        )
    events = [
        {
            "id": f"evt-{key}-{index}",
            "customer": party.external_id,
            "type": "request.completed",
            "timestamp": (now - timedelta(hours=index + 1)).isoformat(),
            "properties": {"model": "fast-1"},
        }
        for key, party in parties.items()
        for index in range(3)
    ]
    ingested = await client.post("/v1/events", json=events, headers={"Authorization": f"Bearer {admin}"})
    assert ingested.json()["accepted"] == len(events), ingested.text
    await run_billing(sessions, settings, as_of=datetime.now(UTC))
    for party in parties.values():
        found = await _admin(
            client,
            admin,
            "query($e: String) { customer(externalId: $e) { invoices { edges { node { id number } } } } }",
            {"e": party.external_id},
        )
        nodes = [edge["node"] for edge in found["customer"]["invoices"]["edges"]]
        assert nodes, "the billing run issued invoices"
        party.invoice_ids = tuple(node["id"] for node in nodes)
        party.invoice_numbers = tuple(node["number"] for node in nodes)
    return World(
        alpha=parties["alpha"],
        bravo=parties["bravo"],
        alpha_token=await token_for("customer", parties["alpha"].external_id),
        admin_token=admin,
        internal_reasons=tuple(reasons),
    )


# --- The schema, as the server serves it ------------------------------------------------------


async def served_schema(client: httpx.AsyncClient, token: str) -> GraphQLSchema:
    body = (await graphql(client, token, get_introspection_query(descriptions=True))).json()
    return build_client_schema(body["data"])


def needs_value(argument: GraphQLArgument) -> bool:
    """A required argument with no default (graphql-core 3.3 keeps introspected defaults in ``default``)."""
    has_default = argument.default_value is not Undefined or getattr(argument, "default", None) is not None
    return is_non_null_type(argument.type) and not has_default


def staff_only(field: GraphQLField) -> bool:
    return "Staff only" in (field.description or "")


def argument_literal(value: Any) -> str:
    return json.dumps(value)


def selection(schema: GraphQLSchema, type_: GraphQLNamedType, path: tuple[str, ...] = ()) -> str:
    """Every field of ``type_``, and of the types they reach, once per path (no type twice on a
    path, so cycles end), each nested field's required arguments from NESTED_ARGUMENTS."""
    if isinstance(type_, GraphQLUnionType | GraphQLInterfaceType):
        fragments = [
            f"... on {member.name} {selection(schema, member, path)}"
            for member in schema.get_possible_types(type_)
            if member.name not in path
        ]
        return "{ __typename " + " ".join(fragments) + " }"
    assert isinstance(type_, GraphQLObjectType)
    parts = []
    for name, field in type_.fields.items():
        arguments = []
        for arg_name, argument in field.args.items():
            if needs_value(argument):
                assert arg_name in NESTED_ARGUMENTS, (
                    f"{type_.name}.{name}: add a value for {arg_name} to NESTED_ARGUMENTS"
                )
                arguments.append(f"{arg_name}: {literal(NESTED_ARGUMENTS[arg_name], argument.type)}")
        call = f"{name}({', '.join(arguments)})" if arguments else name
        inner = get_named_type(field.type)
        if isinstance(inner, GraphQLObjectType | GraphQLUnionType | GraphQLInterfaceType):
            if inner.name in path or len(path) >= MAX_DEPTH:
                continue
            parts.append(f"{call} {selection(schema, inner, (*path, type_.name))}")
        else:
            parts.append(call)
    return "{ " + " ".join(parts) + " }"


def literal(value: Any, type_: GraphQLInputType) -> str:
    """A GraphQL literal of ``value`` for an argument of ``type_`` (enums unquoted)."""
    named = get_named_type(type_)
    if isinstance(named, GraphQLEnumType):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {literal(v, named.fields[k].type)}" for k, v in value.items()) + "}"  # type: ignore[union-attr]
    return argument_literal(value)


def scalar_sample(type_: GraphQLInputType, name: str) -> Any:
    """A well-formed value for a required argument that is not being probed."""
    named = get_named_type(type_)
    if isinstance(named, GraphQLEnumType):
        return next(iter(named.values))
    if isinstance(named, GraphQLInputObjectType):
        return {k: scalar_sample(f.type, k) for k, f in named.fields.items() if is_non_null_type(f.type)}
    if isinstance(type_, GraphQLNonNull) and isinstance(type_.of_type, GraphQLList):
        return []
    return {
        "DateTime": (datetime.now(UTC) - timedelta(days=60)).isoformat(),
        "Int": 5,
        "Boolean": False,
        "Decimal": "1",
        "JSON": {},
    }.get(named.name, NESTED_ARGUMENTS.get(name, "x"))


def root_calls(field_name: str, field: GraphQLField, probes: dict[str, list[str]]) -> Iterator[str]:
    """The root field called once with only its required arguments (when it can be), then once
    per probe value of each ID or String argument."""
    required = {name: argument for name, argument in field.args.items() if needs_value(argument)}
    filled = {name: literal(scalar_sample(arg.type, name), arg.type) for name, arg in required.items()}
    yield f"{field_name}({', '.join(f'{k}: {v}' for k, v in filled.items())})" if filled else field_name
    for name, argument in field.args.items():
        kind = get_named_type(argument.type).name
        if kind not in probes or isinstance(argument.type, GraphQLList):
            continue
        for value in probes[kind]:
            given = {**filled, name: argument_literal(value)}
            yield f"{field_name}({', '.join(f'{k}: {v}' for k, v in given.items())})"


def staff_values(schema: GraphQLSchema, type_: GraphQLNamedType, data: Any, where: str = "") -> list[str]:
    """Paths of staff-only fields that hold a value in ``data`` (an answer of ``type_``)."""
    if isinstance(data, list):
        return [p for i, item in enumerate(data) for p in staff_values(schema, type_, item, f"{where}[{i}]")]
    if not isinstance(data, dict):
        return []
    if isinstance(type_, GraphQLUnionType | GraphQLInterfaceType):
        type_ = schema.get_type(data["__typename"])  # type: ignore[assignment]
    if not isinstance(type_, GraphQLObjectType):
        return []
    found = []
    for key, value in data.items():
        field = type_.fields.get(key)
        if field is None:
            continue
        if staff_only(field) and value is not None:
            found.append(f"{where}.{key}")
        found += staff_values(schema, get_named_type(field.type), value, f"{where}.{key}")
    return found


def leaks(body: dict, world: World) -> list[str]:
    """Strings of customer B, or of staff, found anywhere in an answer (data and errors)."""
    answer = json.dumps(body)
    forbidden = [*world.bravo.secrets, STAFF, "token:tly_", *world.internal_reasons]
    return [secret for secret in forbidden if secret and secret in answer]


# --- The matrix ---------------------------------------------------------------------------------


async def test_a_customer_token_reads_only_its_own_data_in_every_root_field(
    client: httpx.AsyncClient, world: World
) -> None:
    schema = await served_schema(client, world.admin_token)
    query_type = schema.query_type
    assert query_type is not None
    probes = {
        "ID": [*world.bravo.identifiers, *world.alpha.identifiers, "not-a-uuid"],
        "String": [*world.bravo.texts, *world.alpha.texts],
    }
    asked, own_data = 0, 0
    for field_name, field in query_type.fields.items():
        result_type = get_named_type(field.type)
        shape = selection(schema, result_type) if isinstance(result_type, GraphQLObjectType) else ""
        for call in root_calls(field_name, field, probes):
            response = await graphql(client, world.alpha_token, f"{{ {call} {shape} }}")
            assert response.status_code == 200, (call, response.text)
            body = response.json()
            codes = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
            assert "INTERNAL" not in codes, (call, body["errors"])
            assert leaks(body, world) == [], (call, leaks(body, world))
            data = (body.get("data") or {}).get(field_name)
            assert staff_values(schema, result_type, data) == [], call
            asked += 1
            own_data += world.alpha.customer_id in json.dumps(data)
    assert asked > 100 and own_data > 5, (asked, own_data)

    # The matrix can see what it looks for: the same questions, asked by staff, find all of it.
    admin_view = (
        await graphql(
            client,
            world.admin_token,
            f'{{ customer(externalId: "{world.bravo.external_id}") {selection(schema, schema.get_type("Customer"))} }}',  # type: ignore[arg-type]
        )
    ).json()
    assert "errors" not in admin_view, admin_view
    assert set(leaks(admin_view, world)) >= {world.bravo.external_id, world.bravo.name, STAFF, "token:tly_"}
    assert staff_values(schema, schema.get_type("Customer"), admin_view["data"]["customer"])  # type: ignore[arg-type]


async def test_a_customer_token_changes_nothing_of_another_customer(
    client: httpx.AsyncClient, world: World, session: AsyncSession
) -> None:
    """Every mutation, asked by customer A about customer B: refused (forbidden to the role, or
    not found), no trace of B in the answer, and not one row anywhere changed."""
    schema = await served_schema(client, world.admin_token)
    mutation_type = schema.mutation_type
    assert mutation_type is not None
    bravo = world.bravo
    by_name = {
        "customerId": bravo.customer_id,
        "invoiceId": bravo.invoice_ids[0],
        "code": bravo.promotion_code,
        "planKey": "team",
        "customer": bravo.external_id,
    }
    keys = count()

    def input_for(type_: GraphQLInputType, name: str) -> Any:
        nullable = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if isinstance(nullable, GraphQLList):
            return [input_for(nullable.of_type, name)]
        named = get_named_type(type_)
        if isinstance(named, GraphQLInputObjectType):
            return {k: input_for(f.type, k) for k, f in named.fields.items() if is_non_null_type(f.type)}
        if name == "idempotencyKey":
            return f"probe-{next(keys)}"
        if name in by_name:
            return by_name[name]
        if named.name == "ID":
            return bravo.other_ids[0]
        return scalar_sample(type_, name)

    before = await table_counts(session)
    for field_name, field in mutation_type.fields.items():
        variables = {name: input_for(argument.type, name) for name, argument in field.args.items()}
        declared = ", ".join(f"${name}: {argument.type}" for name, argument in field.args.items())
        passed = ", ".join(f"{name}: ${name}" for name in field.args)
        result_type = get_named_type(field.type)
        assert isinstance(result_type, GraphQLObjectType)
        document = (
            f"mutation{f'({declared})' if declared else ''} "
            f"{{ {field_name}{f'({passed})' if passed else ''} {selection(schema, result_type)} }}"
        )
        response = await graphql(client, world.alpha_token, document, variables)
        assert response.status_code == 200, (field_name, response.text)
        body = response.json()
        assert leaks(body, world) == [], (field_name, leaks(body, world))
        codes = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
        payload = (body.get("data") or {}).get(field_name)
        refused = codes == ["FORBIDDEN"] or (payload is not None and payload.get("userErrors"))
        assert refused, (field_name, body)
        if payload and payload.get("userErrors"):
            assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"], (field_name, payload)
    assert await table_counts(session) == before


async def table_counts(session: AsyncSession) -> dict[str, int]:
    """Rows in every table of the schema: a mutation that changed nothing leaves each count alone."""
    names = (
        await session.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        )
    ).scalars()
    counts = " UNION ALL ".join(f"SELECT '{name}', count(*) FROM \"{name}\"" for name in names)
    found = {name: rows for name, rows in (await session.execute(text(counts))).all()}
    await session.commit()
    return found


async def test_a_customer_token_gets_not_found_for_another_customer_over_rest(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = {"Authorization": f"Bearer {world.alpha_token}"}
    for path in (
        f"/v1/customers/{world.bravo.external_id}",
        f"/v1/customers/{world.bravo.external_id}/entitlements/requests",
    ):
        hidden = await client.get(path, headers=headers)
        assert (hidden.status_code, hidden.json()["code"]) == (404, "NOT_FOUND"), path
        assert world.bravo.name not in hidden.text
    own = await client.get(f"/v1/customers/{world.alpha.external_id}/entitlements/requests", headers=headers)
    assert own.status_code == 200 and own.json()["allowed"] is True


async def test_the_scope_helper_refuses_another_customers_id_as_not_found(session: AsyncSession, world: World) -> None:
    """The helper every mutation and lookup goes through: another customer's id reads exactly as
    an id that does not exist (same code, same field, same message)."""
    from app.api.scope import find_visible_customer, visible_customer
    from app.auth import Role, Viewer
    from ledger.errors import NotFound

    alpha = Viewer(role=Role.CUSTOMER, actor="test", customer_id=uuid.UUID(world.alpha.customer_id))
    refusals = []
    for customer_id in (world.bravo.customer_id, str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(NotFound) as refused:
            await visible_customer(session, alpha, customer_id)
        refusals.append((refused.value.code, refused.value.field, refused.value.message))
    assert len(set(refusals)) == 1, refusals
    assert await find_visible_customer(session, alpha, external_id=world.bravo.external_id) is None
    own = await visible_customer(session, alpha, world.alpha.customer_id)
    assert own.external_id == world.alpha.external_id
    staff = Viewer(role=Role.SUPPORT, actor="test")
    assert (await visible_customer(session, staff, world.bravo.customer_id)).external_id == world.bravo.external_id
    with pytest.raises(ValueError):
        Viewer(role=Role.CUSTOMER, actor="test")  # a customer viewer bound to no one would see everyone
