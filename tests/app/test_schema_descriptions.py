"""Every type and field the contract's operations (the frontend's and the console's) read has a
description in the schema, so a frontend engineer reading GraphiQL or the SDL learns what each
figure means without asking."""

from __future__ import annotations

from graphql import FieldNode, GraphQLSchema, TypeInfo, Visitor, build_schema, get_named_type, parse, visit
from graphql.utilities import TypeInfoVisitor

from app.api.schema import sdl
from tests.conftest import CONTRACT

BUILT_IN = {"String", "Int", "Boolean", "ID", "Float"}


def undescribed(schema: GraphQLSchema, document: str) -> set[str]:
    missing: set[str] = set()
    type_info = TypeInfo(schema)

    class Reader(Visitor):
        def enter_field(self, node: FieldNode, *_: object) -> None:
            parent, definition = type_info.get_parent_type(), type_info.get_field_def()
            if parent is None or definition is None:
                return
            if not definition.description:
                missing.add(f"{parent.name}.{node.name.value}")
            named = get_named_type(definition.type)
            if named.name not in BUILT_IN and not named.description:
                missing.add(named.name)

    visit(parse(document), TypeInfoVisitor(type_info, Reader()))
    return missing


def test_every_type_and_field_the_contract_reads_is_described() -> None:
    schema = build_schema(sdl())
    documents = sorted((CONTRACT / "operations").glob("*.graphql"))
    assert documents, f"the contract's operations are in {CONTRACT}/operations"
    missing = set().union(*(undescribed(schema, document.read_text()) for document in documents))
    assert not missing, f"describe these in app/api: {sorted(missing)}"
