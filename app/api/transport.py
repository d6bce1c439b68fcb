"""GraphQL over HTTP: Strawberry's FastAPI router, reading request bodies a hostile client can send."""

from __future__ import annotations

import json

from fastapi import Request
from graphql import GraphQLError
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from app.vendored import offline_page


class TallyGraphQLRouter(GraphQLRouter):
    """A body nested thousands of levels deep, or holding an integer past Python's 4,300-digit
    limit, makes ``json.loads`` raise RecursionError or ValueError, which Strawberry answers
    with a 500. Such a body cannot be read: it is a 400, like any body that is not JSON.

    GraphiQL's scripts and styles come from ``static/vendor/``, not from a CDN. Every error in an
    answer carries a machine-readable ``extensions.code`` (:func:`with_code`)."""

    @property
    def graphql_ide_html(self) -> str:
        return offline_page(super().graphql_ide_html)

    def decode_json(self, data: str | bytes) -> object:
        try:
            return json.loads(data)
        except (RecursionError, ValueError) as error:
            raise json.JSONDecodeError(f"not a readable JSON body: {error}", "", 0) from None

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        for error in result.errors or []:
            error.extensions = with_code(error).extensions
        return await super().process_result(request, result)


def with_code(error: GraphQLError) -> GraphQLError:
    """The error with a machine-readable ``extensions.code``, so a client tells every error apart
    without reading its message: Tally's own errors carry theirs (FORBIDDEN, INTERNAL, a refusal's
    code…); graphql-core's get GRAPHQL_PARSE_FAILED (not a document), BAD_USER_INPUT (a variable,
    or an argument of the wrong shape), GRAPHQL_VALIDATION_FAILED (a document this schema cannot
    run, or one past a limit) or INTERNAL (a null where the schema promised a value)."""
    if error.extensions and "code" in error.extensions:
        return error
    if error.message.startswith("Syntax Error"):
        code = "GRAPHQL_PARSE_FAILED"
    elif error.message.startswith("Cannot return null for non-nullable field"):
        code = "INTERNAL"  # a resolver broke the schema's promise: Tally's fault, not the caller's
    elif error.path is not None or error.message.startswith("Variable '$"):
        code = "BAD_USER_INPUT"
    else:
        code = "GRAPHQL_VALIDATION_FAILED"
    return GraphQLError(
        error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions={**(error.extensions or {}), "code": code},
    )
