"""REST endpoints beside GraphQL, for edge services and scripts that want plain JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from app.auth import Capability, Viewer
from app.dependencies import SessionDep, authenticate, requires
from customers import service as customers

router = APIRouter(prefix="/v1")


@router.get("/whoami", summary="The role and customer of the calling token")
async def whoami(request: Request, session: SessionDep) -> dict[str, str | None]:
    viewer = await authenticate(request, session)
    return {
        "role": viewer.role.value,
        "actor": viewer.actor,
        "customerId": str(viewer.customer_id or "") or None,
    }


@router.get("/customers/{external_id}", summary="One customer by external id")
async def get_customer(
    external_id: str,
    session: SessionDep,
    viewer: Annotated[Viewer, Depends(requires(Capability.READ_CUSTOMERS))],
) -> dict[str, str | None]:
    customer = await customers.get_customer(session, external_id=external_id)
    if customer is None or not viewer.may_see_customer(customer.id):
        raise HTTPException(404, detail={"code": "NOT_FOUND", "message": f"no customer {external_id!r}"})
    return {
        "id": str(customer.id),
        "externalId": customer.external_id,
        "name": customer.name,
        "email": customer.email,
        "currency": customer.currency,
        "status": customer.status,
        "createdAt": customer.created_at.isoformat(),
    }
