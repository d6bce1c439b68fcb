"""The layout's import direction (ARCHITECTURE.md), checked on every run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pricing_uses_only_the_ledgers_vocabulary_of_money_and_errors() -> None:
    graph = grimp.build_graph("pricing", "ledger")
    imported = {
        imported
        for module in graph.find_descendants("pricing") | {"pricing"}
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.startswith("ledger")
    }
    assert imported <= {"ledger.money", "ledger.errors"}, imported


def test_console_sections_share_pages_and_only_the_routes_module_assembles_them() -> None:
    """No cycle between the console's sections and the module that mounts them: a section imports
    what pages share from ``console.pages``, never ``console.routes``."""
    graph = grimp.build_graph("console")
    importers = graph.find_modules_that_directly_import("console.routes")
    assert importers == set(), importers
    assert "console.routes" not in graph.find_modules_directly_imported_by("console.pages")
