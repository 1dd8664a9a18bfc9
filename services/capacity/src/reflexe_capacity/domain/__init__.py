"""The capacity service's pure domain: HAD registry, per-HAD capacity ledger, matcher.

No I/O and no framework imports: adapters and the service layer sit around it.
"""

from .capacity import (
    CapacityDeclaration,
    CapacityError,
    HadLedger,
    Hold,
    HoldConflict,
    HoldState,
    IllegalHoldTransition,
    NoPlaceLeft,
    ResponseTimes,
    UnknownHold,
)
from .matching import (
    Candidate,
    Exclusion,
    ExclusionRule,
    MatchDecision,
    MatchRequest,
    RankedHad,
    desk_offer,
    match,
)
from .registry import Contacts, HadEstablishment

__all__ = [
    "CapacityDeclaration",
    "CapacityError",
    "Candidate",
    "Contacts",
    "Exclusion",
    "ExclusionRule",
    "HadEstablishment",
    "HadLedger",
    "Hold",
    "HoldConflict",
    "HoldState",
    "IllegalHoldTransition",
    "MatchDecision",
    "MatchRequest",
    "NoPlaceLeft",
    "RankedHad",
    "ResponseTimes",
    "UnknownHold",
    "desk_offer",
    "match",
]
