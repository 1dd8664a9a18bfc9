"""A notice: one domain event as the webhook body that tells it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reflexe_notify.domain.routing import EventKind


@dataclass(frozen=True)
class Notice:
    kind: EventKind
    department: str
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    referral_id: str | None = None
    had_finess: str | None = None  # the HAD concerned, when the HAD is a recipient

    def body(self) -> str:
        """The exact body every attempt sends (computed once, stored with the delivery)."""
        return json.dumps({"type": str(self.kind), "timestamp": self.occurred_at.isoformat(), "data": self.data},
                          separators=(",", ":"), ensure_ascii=False)
