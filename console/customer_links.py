"""Customer URLs by external id: ``/console/customers/org_acme`` (and every page under it) answers
with a redirect to the canonical URL, which names the customer by its internal id. People paste
the id they know, the one their product uses; the console's own links keep the internal one."""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)


class ExternalIdConvertor(Convertor[str]):
    """One path segment that is not an internal id (a UUID): those go to the pages themselves."""

    regex = r"(?![0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?:/|$))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("external_id", ExternalIdConvertor())
SUB_PAGE = re.compile(r"[\w./-]*")


@router.get("/customers/{external_id:external_id}")
@router.get("/customers/{external_id:external_id}/{page:path}")
async def customer_by_external_id(request: Request, context: ContextDep, external_id: str, page: str = "") -> Response:
    found = (await query(request, "ConsoleCustomerByExternalId", {"externalId": external_id}, context))["customer"]
    if found is None or not SUB_PAGE.fullmatch(page):
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    target = f"/console/customers/{found['id']}" + (f"/{page}" if page else "")
    if request.url.query:
        target += f"?{request.url.query}"
    return RedirectResponse(target, status_code=307)
