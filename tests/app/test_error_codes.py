"""Every GraphQL error carries a machine-readable `extensions.code`, and every userError a `code`:
a client tells them apart without reading messages."""

from __future__ import annotations

import httpx
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, get_named_type

from app.api.schema import build_schema
from app.settings import Settings
from tests.conftest import graphql


def test_every_mutation_answers_user_errors_with_a_code() -> None:
    schema = build_schema(Settings())._schema
    user_error = schema.get_type("UserError")
    assert isinstance(user_error, GraphQLObjectType)
    assert isinstance(user_error.fields["code"].type, GraphQLNonNull)
    assert schema.mutation_type is not None
    for name, mutation in schema.mutation_type.fields.items():
        payload = get_named_type(mutation.type)
        assert isinstance(payload, GraphQLObjectType), name
        errors = payload.fields["userErrors"].type
        assert isinstance(errors, GraphQLNonNull) and isinstance(errors.of_type, GraphQLList), name
        assert get_named_type(errors) is user_error, name


async def test_every_graphql_error_has_a_code(client: httpx.AsyncClient, token_for) -> None:
    admin, ingest = await token_for("admin"), await token_for("ingest")
    page = "{ customers(first: 5, after: $after) { edges { node { id } } } }"
    cases = [
        ("{ customers(", None, admin, "GRAPHQL_PARSE_FAILED", None),
        ("{ nope }", None, admin, "GRAPHQL_VALIDATION_FAILED", None),
        (
            "query($f: Int) { customers(first: $f) { edges { node { id } } } }",
            {"f": "x"},
            admin,
            "BAD_USER_INPUT",
            None,
        ),
        (
            "{ " + " ".join(f"a{i}: __typename" for i in range(100)) + " }",
            None,
            admin,
            "GRAPHQL_VALIDATION_FAILED",
            None,
        ),
        ("query($after: String) " + page, {"after": "not-a-cursor"}, admin, "INVALID_CURSOR", ["after"]),
        ("{ customers(first: 0) { edges { node { id } } } }", None, admin, "INVALID_PAGE_SIZE", ["first"]),
        ("{ customer { id } }", None, admin, "EXACTLY_ONE_ARGUMENT", ["id"]),
        (
            "{ meteringHistory(bucketMinutes: 0) { points { start } } }",
            None,
            admin,
            "TOO_MANY_BUCKETS",
            ["bucketMinutes"],
        ),
        ("{ traces { edges { node { traceId } } } }", None, ingest, "FORBIDDEN", None),
    ]
    for document, variables, token, code, field in cases:
        body = (await graphql(client, token, document, variables)).json()
        assert body.get("errors"), document
        for error in body["errors"]:
            assert error["extensions"]["code"] == code, (document, error)
            if field is not None:
                assert error["extensions"]["field"] == field, (document, error)
