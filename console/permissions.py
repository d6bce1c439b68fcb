"""What the signed-in staff user may do, asked by templates: each form and button of the console
is rendered only for roles whose capability the action's mutation requires (``app.auth`` holds
the one role table; the API refuses the rest anyway)."""

from __future__ import annotations

from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

from app.auth import ROLE_CAPABILITIES, Capability, Role


def role_may(role: str | None, capability: str) -> bool:
    """Whether ``role`` holds ``capability``; an unknown capability name is a bug, so it raises."""
    wanted = Capability(capability)
    return role is not None and wanted in ROLE_CAPABILITIES[Role(role)]


@pass_context
def can(context: Context, capability: str) -> bool:
    """``{% if can("grant_credits") %}``: the template global every console action is wrapped in."""
    staff: dict[str, Any] | None = context.get("staff")
    return role_may(staff["role"] if staff else None, capability)
