"""An in-memory unit of work for the capacity commands (service_layer.unit_of_work.UnitOfWork):
the registry, ledgers (with their versions), holds, match requests and published events as plain
Python, so the matcher's commands run without PostgreSQL or Kafka."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from reflexe_capacity.domain.capacity import CapacityDeclaration, HadLedger, Hold, HoldState
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_common.envelope import Envelope


def _copy(ledger: HadLedger, holds: list[Hold] | None = None) -> HadLedger:
    return dataclasses.replace(ledger, holds=list(holds or []))


class FakeUnitOfWork:
    def __init__(self) -> None:
        self.hads: dict[str, HadEstablishment] = {}
        self.ledgers: dict[str, HadLedger] = {}  # as committed: counts and version, no holds
        self.holds: dict[str, Hold] = {}
        self.match_requests: dict[str, dict[str, Any]] = {}
        self.declarations: list[tuple[CapacityDeclaration, str]] = []
        self.events: list[tuple[str, str, Envelope]] = []
        # Writes refused as if another process had changed the ledger just before (then applied).
        self.changed_elsewhere: dict[str, list[HadLedger]] = {}
        self.lost_writes = 0

    def register(self, had: HadEstablishment) -> None:
        self.hads[had.finess] = had
        self.ledgers.setdefault(had.finess, HadLedger(had.finess))

    # ---- ledgers ---------------------------------------------------------------------------
    async def candidates(self, departments: list[str]) -> list[tuple[HadEstablishment, HadLedger]]:
        return [(had, _copy(self.ledgers[f])) for f, had in sorted(self.hads.items()) if had.departments & set(departments)]

    async def had_with_ledger(self, finess: str) -> tuple[HadEstablishment, HadLedger] | None:
        if finess not in self.hads:
            return None
        return self.hads[finess], _copy(self.ledgers[finess])

    async def hold_with_ledger(self, hold_id: str) -> tuple[HadEstablishment, HadLedger] | None:
        hold = self.holds.get(hold_id)
        if hold is None:
            return None
        return self.hads[hold.had_finess], _copy(self.ledgers[hold.had_finess], [hold])

    def _write(self, ledger: HadLedger, read_version: int) -> bool:
        pending = self.changed_elsewhere.get(ledger.had_finess)
        if pending:
            self.ledgers[ledger.had_finess] = pending.pop(0)
            self.lost_writes += 1
        if self.ledgers[ledger.had_finess].version != read_version:
            return False
        self.ledgers[ledger.had_finess] = _copy(ledger)
        return True

    async def save_ledger(self, ledger: HadLedger, read_version: int) -> bool:
        return self._write(ledger, read_version)

    async def save_new_hold(self, ledger: HadLedger, read_version: int, hold: Hold, department: str,
                            by_desk: bool) -> bool:
        if not self._write(ledger, read_version):
            return False
        self.holds[hold.hold_id] = hold
        request = self.match_requests.get(hold.referral_id)
        if request is not None and hold.had_finess not in request["tried_hads"]:
            request["tried_hads"].append(hold.had_finess)
        return True

    async def save_hold_change(self, ledger: HadLedger, read_version: int, hold: Hold, at: datetime,
                               answered: bool) -> bool:
        if not self._write(ledger, read_version):
            return False
        self.holds[hold.hold_id] = hold
        return True

    async def save_declaration(self, declaration: CapacityDeclaration, channel: str) -> bool:
        if any(d.had_finess == declaration.had_finess and d.declared_at == declaration.declared_at
               for d, _ in self.declarations):
            return False
        self.declarations.append((declaration, channel))
        return True

    async def holding_holds_of_referral(self, referral_id: str) -> list[dict[str, Any]]:
        return [{"hold_id": h.hold_id, "had_finess": h.had_finess} for h in self.holds.values()
                if h.referral_id == referral_id and h.state in (HoldState.ACTIVE, HoldState.CONFIRMED)]

    # ---- match requests --------------------------------------------------------------------
    def _row(self, referral_id: str) -> dict[str, Any]:
        row = self.match_requests[referral_id]
        holds = [h for h in self.holds.values() if h.referral_id == referral_id]
        return {**row, "departments": list(row["departments"]), "tried_hads": list(row["tried_hads"]),
                "attempts": len(holds), "holding": any(h.takes_place for h in holds)}

    async def save_match_request(self, referral_id: str, department: str, request: bytes) -> dict[str, Any] | None:
        if referral_id in self.match_requests:
            return None
        self.match_requests[referral_id] = {"referral_id": referral_id, "department": department, "request": request,
                                            "departments": [], "tried_hads": [], "open": True}
        return self._row(referral_id)

    async def lock_match_request(self, referral_id: str) -> dict[str, Any] | None:
        return self._row(referral_id) if referral_id in self.match_requests else None

    async def update_match_request(self, referral_id: str, *, tried: str | None = None,
                                   departments: list[str] | None = None, open: bool | None = None) -> None:
        row = self.match_requests.get(referral_id)
        if row is None:
            return
        if tried is not None and tried not in row["tried_hads"]:
            row["tried_hads"].append(tried)
        if departments:
            row["departments"] = sorted(set(row["departments"]) | set(departments))
        if open is not None:
            row["open"] = open

    async def publish(self, events: Iterable[tuple[str, str, Envelope]]) -> None:
        self.events.extend(events)

    def published(self, type_name: str) -> list[Any]:
        return [e.message for _, _, e in self.events if e.type == f"reflexe.v1.{type_name}"]
