"""`tally interim list|check` against a real database: where a customer stands against the
threshold, the check issuing the interim invoice once however often it runs, and refusals."""

from __future__ import annotations

import json
import uuid

from tests.app.test_cli import run, scalar
from tests.billing.test_threshold_invoicing import over_threshold

__all__ = ["over_threshold", "run"]


def test_interim_invoices_checked_listed_and_refused(  # type: ignore[no-untyped-def]
    run, database_url: str, over_threshold: tuple[uuid.UUID, str]
) -> None:
    _, external_id = over_threshold
    before = json.loads(run("interim", "list", external_id, "--json").stdout)
    assert before["invoices"] == []
    assert [(t["unbilled"], t["threshold"], t["currency"]) for t in before["thresholds"]] == [("14.50", "10.00", "USD")]
    checked = run("interim", "check", "--json")
    assert checked.exit_code == 0, checked.output
    [issued] = json.loads(checked.stdout)
    assert (issued["interimSequence"], issued["total"], issued["status"]) == (1, "14.50", "issued")
    again = run("interim", "check")
    assert again.exit_code == 0 and "0 interim invoice(s) issued" in again.output
    assert scalar(database_url, "SELECT count(*) FROM invoices WHERE kind = 'interim'") == 1
    after = json.loads(run("interim", "list", external_id, "--json").stdout)
    assert [i["number"] for i in after["invoices"]] == [issued["number"]]
    assert [t["unbilled"] for t in after["thresholds"]] == ["0.00"]
    plain = run("interim", "list", external_id)
    assert plain.exit_code == 0 and f"{issued['number']}  interim 1 of" in plain.output
    assert "unbilled usage 0.00 of a 10.00 USD threshold" in plain.output
    for absurd in ("nobody", "x" * 5000, "'; DROP TABLE invoices; --"):
        refused = run("interim", "list", absurd)
        assert refused.exit_code == 1 and "EXTERNAL_ID" in refused.output, refused.output
