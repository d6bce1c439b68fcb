"""The console's way to Tally's data: named operations of graphql/operations, executed
in-process against the same schema (and permission classes) that API clients use."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse, print_ast
from strawberry import Schema

from app.api.context import TallyContext

OPERATIONS_DIR = Path(__file__).resolve().parents[1] / "graphql" / "operations"


class ConsoleQueryFailed(Exception):
    """The schema answered with errors (a permission error, a bad cursor, a bug)."""

    def __init__(self, messages: list[str]):
        super().__init__("; ".join(messages))
        self.messages = messages


@cache
def operation_documents() -> dict[str, str]:
    """Every named operation in graphql/operations/*.graphql, by name, with the fragments of its
    file that it spreads."""
    documents: dict[str, str] = {}
    for path in sorted(OPERATIONS_DIR.glob("*.graphql")):
        definitions = parse(path.read_text()).definitions
        fragments = {d.name.value: print_ast(d) for d in definitions if isinstance(d, FragmentDefinitionNode)}
        for definition in definitions:
            if isinstance(definition, OperationDefinitionNode) and definition.name:
                printed = print_ast(definition)
                used = [text for name, text in fragments.items() if f"...{name}" in printed]
                documents[definition.name.value] = "\n\n".join([printed, *used])
    return documents


async def run_operation(schema: Schema, name: str, variables: dict[str, Any], context: TallyContext) -> dict[str, Any]:
    result = await schema.execute(
        operation_documents()[name], variable_values=variables, context_value=context, operation_name=name
    )
    if result.errors:
        raise ConsoleQueryFailed([error.message for error in result.errors])
    assert result.data is not None
    return result.data
