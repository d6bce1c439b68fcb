"""`tally webhook …`: every command has help and --json; an endpoint registered, listed, changed,
rotated, switched and deleted from the command line; hostile arguments are refused with the
option named and exit 1, writing nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.app.test_cli import run, scalar

__all__ = ["run"]

COMMANDS = [
    "event-types",
    "create",
    "list",
    "update",
    "enable",
    "disable",
    "rotate",
    "delete",
    "deliveries",
    "resend",
    "replay",
    "send",
]


def test_every_webhook_command_has_help_and_json(run) -> None:
    assert run("webhook", "--help").exit_code == 0
    for command in COMMANDS:
        result = run("webhook", command, "--help")
        assert result.exit_code == 0, (command, result.output)
        assert "--json" in result.output, command


def test_an_endpoint_from_the_command_line(run, database_url: str) -> None:
    checked = run("webhook", "create", "https://example.com/hooks", "--event", "invoice.paid", "--dry-run", "--json")
    assert checked.exit_code == 0, checked.output
    assert scalar(database_url, "SELECT count(*) FROM webhook_endpoints") == 0
    created = run("webhook", "create", "https://example.com/hooks", "--event", "invoice.paid", "--key", "k1", "--json")
    document = json.loads(created.output)
    assert document["eventTypes"] == ["invoice.paid"] and document["secret"].startswith("whsec_")
    again = json.loads(
        run("webhook", "create", "https://example.com/hooks", "--event", "invoice.paid", "--key", "k1", "--json").output
    )
    assert again["id"] == document["id"]
    endpoint = document["id"]

    listed = run("webhook", "list")
    assert "https://example.com/hooks  [invoice.paid]  enabled" in listed.output and "whsec_" not in listed.output
    updated = json.loads(run("webhook", "update", endpoint, "--every-event", "--description", "all", "--json").output)
    assert updated["eventTypes"] is None and updated["description"] == "all"
    rotated = json.loads(run("webhook", "rotate", endpoint, "--overlap-hours", "1", "--json").output)
    assert rotated["secret"] != document["secret"] and rotated["previousSecretUntil"]
    assert "disabled (disabled by cli)" in run("webhook", "disable", endpoint).output
    assert json.loads(run("webhook", "enable", endpoint, "--json").output)["enabled"] is True
    assert run("webhook", "deliveries", endpoint).output.strip() == "no deliveries"
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert json.loads(run("webhook", "replay", endpoint, "--since", since, "--dry-run", "--json").output) == {
        "events": 0,
        "dryRun": True,
    }
    sent = json.loads(run("webhook", "send", "--json").output)
    assert sent["delivered"] == 0
    assert "invoice.paid" in run("webhook", "event-types").output
    assert run("webhook", "delete", endpoint).exit_code == 0
    assert scalar(database_url, "SELECT count(*) FROM webhook_endpoints") == 0


def test_hostile_arguments_are_refused_naming_the_option(run, database_url: str) -> None:
    refused = [
        (["create", "https://example.com/" + "a" * 3000], "url: at most 2048 characters"),
        (["create", "file:///etc/passwd"], "url: use an http:// or https:// URL"),
        (["create", "https://example.com", "--event", "invoice.exploded"], "eventTypes: unknown event type"),
        (["rotate", "nope"], "endpoint: no such webhook endpoint"),
        (["resend", "nope"], "delivery: no such webhook delivery"),
        (["replay", "nope", "--since", "yesterday"], "--since: 'yesterday' is not an ISO 8601 time"),
    ]
    for args, message in refused:
        result = run("webhook", *args)
        assert result.exit_code != 0, args
        assert message in " ".join(result.output.split()), (args, result.output)
    created = json.loads(run("webhook", "create", "https://example.com", "--json").output)
    result = run("webhook", "rotate", created["id"], "--overlap-hours", "99999")
    assert result.exit_code == 1 and "--overlap-hours: between 0 and 168 hours" in result.output
    result = run("webhook", "deliveries", created["id"], "--limit", "100000")
    assert result.exit_code == 2
    assert scalar(database_url, "SELECT count(*) FROM webhook_endpoints") == 1
