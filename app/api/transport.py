"""GraphQL over HTTP: Strawberry's FastAPI router, reading request bodies a hostile client can send."""

from __future__ import annotations

import json

from strawberry.fastapi import GraphQLRouter

from app.vendored import offline_page


class TallyGraphQLRouter(GraphQLRouter):
    """A body nested thousands of levels deep, or holding an integer past Python's 4,300-digit
    limit, makes ``json.loads`` raise RecursionError or ValueError, which Strawberry answers
    with a 500. Such a body cannot be read: it is a 400, like any body that is not JSON.

    GraphiQL's scripts and styles come from ``static/vendor/``, not from a CDN."""

    @property
    def graphql_ide_html(self) -> str:
        return offline_page(super().graphql_ide_html)

    def decode_json(self, data: str | bytes) -> object:
        try:
            return json.loads(data)
        except (RecursionError, ValueError) as error:
            raise json.JSONDecodeError(f"not a readable JSON body: {error}", "", 0) from None
