"""The refusals of pricing, each with its stable code (part of the public contract); other inputs
it refuses are :class:`ledger.errors.InvalidInput` (``INVALID``) on the field."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import InvalidInput


@dataclass(frozen=True)
class CatalogProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CatalogInvalid(InvalidInput):
    """The file has problems; nothing was written."""

    code = "CATALOG_INVALID"

    def __init__(self, problems: list[CatalogProblem]):
        super().__init__(f"{len(problems)} problem(s) in the catalog", field="catalog")
        self.problems = problems
