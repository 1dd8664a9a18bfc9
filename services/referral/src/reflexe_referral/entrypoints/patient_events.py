"""POST /v1/patient-events: the HL7 gateway reports a patient movement of a hospital or an HAD
(services/gateway, docs/integration-hl7.md). Only the gateway's system token is taken."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from reflexe_common.auth import Principal, Role, require
from reflexe_common.errors import ApiError
from reflexe_common.privacy import Pseudonym
from reflexe_referral.service_layer.patient_events import PatientEvent, apply_patient_event

router = APIRouter(prefix="/v1")


class PatientEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_key: str = Field(min_length=1, max_length=220, pattern=r"^[0-9AB]{9}/[^\x00-\x1f]+$",
                             description="the gateway's message key: sender FINESS/MSH-10")
    sender_finess: str = Field(pattern=r"^(?:[0-9]{2}|2[AB])[0-9]{7}$")
    effect: Literal["ED_EXIT", "HOSPITALISED", "DECEASED", "HAD_ADMITTED", "HAD_DISCHARGED"]
    pseudonym: Pseudonym
    referral_id: uuid.UUID | None = None
    occurred_at: datetime


async def the_gateway(principal: Principal = Depends(require(Role.GATEWAY))) -> Principal:
    if principal.role != Role.GATEWAY:  # require() lets admins through; a person does not report movements
        raise ApiError(403, "ROLE_FORBIDDEN", "only the HL7 gateway reports patient events")
    return principal


@router.post("/patient-events", summary="The HL7 gateway reports a hospital's or an HAD's patient movement")
async def patient_event(body: PatientEventIn, request: Request, principal: Principal = Depends(the_gateway)) -> dict:
    if body.occurred_at.utcoffset() is None:
        raise ApiError(422, "INVALID_EVENT", "occurred_at must carry a time zone",
                       [{"field": "body.occurred_at", "message": "a time zone is required"}])
    service = request.app.state.referrals
    event = PatientEvent(message_key=body.message_key, sender_finess=body.sender_finess, effect=body.effect,
                         pseudonym=body.pseudonym, referral_id=str(body.referral_id) if body.referral_id else None,
                         occurred_at=body.occurred_at)
    return await apply_patient_event(service.unit_of_work(), event, service.now())
