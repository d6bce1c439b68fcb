"""The Plans page: every plan with its versions (the current one first), each version's prices in
words (base fee, every charge by its model) and the customers on it, linked."""

from __future__ import annotations

from itertools import groupby
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/plans")
async def plans_page(request: Request, context: ContextDep, show: str = "in_use") -> Response:
    """By default, the current versions and the older ones somebody is still on; ``show=all``
    adds the versions nobody is on any more."""
    versions = (await query(request, "ConsolePlanVersions", {}, context))["planVersions"]
    shown = [v for v in versions if show == "all" or v["newest"] or v["subscriptions"]]
    plans: list[dict[str, Any]] = [
        {
            "key": key,
            "name": rows[0]["plan"]["name"],
            "versions": rows,
            "customers": sum(r["subscriptions"] for r in rows),
        }
        for key, grouped in groupby(shown, key=lambda v: v["plan"]["key"])
        for rows in [list(grouped)]
    ]
    hidden = len(versions) - len(shown)
    return render(request, "plans.html", {"plans": plans, "show": show, "hidden": hidden})
