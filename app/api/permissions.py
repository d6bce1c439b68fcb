"""Strawberry permission classes over the one role table in ``app.auth``."""

from __future__ import annotations

from functools import cache
from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from app.api.context import TallyContext
from app.auth import Capability


@cache
def requires(capability: Capability) -> type[BasePermission]:
    """A permission class admitting viewers whose role has ``capability``."""

    class HasCapability(BasePermission):
        message = f"Forbidden: your role may not {capability.value.replace('_', ' ')}."
        error_extensions = {"code": "FORBIDDEN"}

        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            context = info.context
            return isinstance(context, TallyContext) and context.authenticated and context.viewer.can(capability)

    HasCapability.__name__ = f"Requires_{capability.value}"
    return HasCapability
