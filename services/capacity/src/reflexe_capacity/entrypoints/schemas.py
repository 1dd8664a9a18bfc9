"""The capacity API's JSON shapes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl

from reflexe_capacity.domain.capacity import MAX_ACTIVE_PATIENTS, HadLedger
from reflexe_capacity.domain.registry import Contacts, HadEstablishment
from reflexe_common.finess import Finess
from reflexe_common.vocabulary import CapacityStatus, Equipment, Mention


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HadIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    departments: list[str] = Field(min_length=1)
    mentions: list[Mention] = Field(default_factory=list)
    mpp_supported: list[str] = Field(min_length=1, description="PMSI-HAD MPP codes, two digits ('03'); 11/12 need "
                                                                 "the mention READAPTATION, 19/21 ANTE_POST_PARTUM, 22 ENFANTS_MOINS_3_ANS")
    equipment: list[Equipment] = Field(default_factory=list)
    zone_communes: list[str] = Field(min_length=1, description="INSEE codes of the communes the HAD serves")
    ehpad_conventions: list[Finess] = Field(default_factory=list, description="FINESS of EHPADs with a partnership convention")
    authorised_places: int = Field(ge=1, le=5000)
    webhook_url: HttpUrl | None = None
    email: str | None = Field(None, max_length=200)

    def to_domain(self, finess: str) -> HadEstablishment:
        return HadEstablishment(
            finess=finess, name=self.name, departments=frozenset(self.departments), mentions=frozenset(self.mentions),
            mpp_supported=frozenset(self.mpp_supported), equipment=frozenset(self.equipment),
            zone_communes=frozenset(self.zone_communes), ehpad_conventions=frozenset(self.ehpad_conventions),
            authorised_places=self.authorised_places,
            contacts=Contacts(webhook_url=str(self.webhook_url) if self.webhook_url else None, email=self.email),
        )


class DeclarationIn(_Strict):
    places_available: int = Field(ge=0, le=5000)
    admissions_possible_today: int = Field(ge=0, le=5000)
    status: CapacityStatus
    declared_at: AwareDatetime | None = Field(None, description="defaults to the time the platform receives it; "
                                                 "refused if more than 5 minutes after the platform's clock")
    active_patients: int | None = Field(None, ge=0, le=MAX_ACTIVE_PATIENTS,
                                        description="the HAD's census: every patient in its care now, not only those "
                                                    "the platform referred; occupancy and viability are computed from it")


def had_view(had: HadEstablishment) -> dict[str, Any]:
    return {
        "finess": had.finess, "name": had.name, "departments": sorted(had.departments), "mentions": sorted(had.mentions),
        "mpp_supported": sorted(had.mpp_supported), "equipment": sorted(had.equipment),
        "zone_communes": sorted(had.zone_communes), "ehpad_conventions": sorted(had.ehpad_conventions),
        "authorised_places": had.authorised_places,
    }


def board_line(had: HadEstablishment, ledger: HadLedger, now: datetime, stale_after: timedelta) -> dict[str, Any]:
    d = ledger.declaration
    return {
        "finess": had.finess,
        "name": had.name,
        "authorised_places": had.authorised_places,
        "declared_places": d.places_available if d else None,
        "active_patients": d.active_patients if d else None,
        "live_places": ledger.live_places(),
        "active_holds": ledger.holding,
        "status": str(d.status) if d else "UNDECLARED",
        "declared_at": d.declared_at.isoformat() if d else None,
        "declaration_age_seconds": int((now - d.declared_at).total_seconds()) if d else None,
        "stale": ledger.is_stale(now, stale_after) if d else True,
    }
