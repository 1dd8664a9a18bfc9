"""Properties of the lifecycle under arbitrary commands: any order, any actor, any time.

Commands go through the decision methods only, as the service layer would: a refusal
changes nothing, produced events are applied, and the history is kept for replay.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from reflexe_common.vocabulary import Reason
from reflexe_referral.domain import (
    CLOSED_STATUSES,
    TRANSITIONS,
    AvisHad,
    Conditions,
    Event,
    IllegalTransition,
    OfferWithdrawn,
    Referral,
    Status,
)

# CURRENT stands for the offer (or HAD) the referral is dealing with when the command runs:
# purely random ids would almost never reach acceptance and admission.
CURRENT = "<current>"
FRESH = "<fresh>"  # an offer id never seen by the referral
HADS = st.one_of(st.just(CURRENT), st.sampled_from(["340000181", "340000264", "34000003A"]))
OFFER_IDS = st.one_of(st.just(CURRENT), st.sampled_from(["o1", "o2", "o3"]))


@dataclass(frozen=True)
class Soon:
    """Minutes after the latest event: lets a run answer within a hold, and go on."""

    minutes: int


# Minutes after the request (any order: around the holds, or past the 24 h target), or soon
# after the latest event.
MINUTES = st.one_of(
    st.integers(0, 90), st.integers(0, 3 * 24 * 60), st.builds(Soon, st.integers(0, 20))
)
REASONS = st.sampled_from(Reason)
TEXT = st.sampled_from(["", "full", "patient refused"])
DEPARTMENTS = st.lists(st.sampled_from(["34", "30", "12", "11"]), max_size=3)


@dataclass(frozen=True)
class Command:
    decision: str
    # `at`: minutes after the request, or Soon; `hold_until`: minutes after `at` (may be 0).
    arguments: dict[str, Any]

    def run(self, referral: Referral, t0: datetime, latest: datetime) -> list[Event]:
        arguments = {name: resolve(referral, name, v) for name, v in self.arguments.items()}
        at = arguments["at"]
        arguments["at"] = (
            latest + timedelta(minutes=at.minutes)
            if isinstance(at, Soon)
            else t0 + timedelta(minutes=at)
        )
        if "hold_until" in arguments:
            arguments["hold_until"] = arguments["at"] + timedelta(minutes=arguments["hold_until"])
        return getattr(referral, self.decision)(**arguments)


def resolve(referral: Referral, name: str, value: Any) -> Any:
    if name == "expected_version":
        return referral.version if value == CURRENT else value
    if value == FRESH:
        return f"o-fresh-{len(referral.offer_hads)}"
    if value != CURRENT:
        return value
    offer = referral.current_offer
    if name == "offer_id":
        return offer.offer_id if offer else "o-new"
    return (offer.had_finess if offer else None) or referral.accepted_had or "340000181"


def command(decision: str, **arguments: st.SearchStrategy) -> st.SearchStrategy[Command]:
    return st.builds(Command, st.just(decision), st.fixed_dictionaries(arguments))


COMMANDS = st.one_of(
    command(
        "record_offer",
        offer_id=OFFER_IDS,
        had=HADS,
        hold_until=st.integers(0, 60),
        explanation=TEXT,
        by_desk=st.booleans(),
        at=MINUTES,
    ),
    command("accept", offer_id=OFFER_IDS, had=HADS, at=MINUTES),
    command("decline", offer_id=OFFER_IDS, had=HADS, reason=REASONS, text=TEXT, at=MINUTES),
    command("expire", offer_id=OFFER_IDS, at=MINUTES),
    command("escalate", why=TEXT, at=MINUTES),
    command("widen", departments=DEPARTMENTS, at=MINUTES),
    command("desk_offer", had=HADS, at=MINUTES),
    command("admit", had=HADS, at=MINUTES),
    command("discharge", had=HADS, at=MINUTES),
    command("cancel", reason=REASONS, text=TEXT, at=MINUTES),
    command("offer_unanswered", offer_id=OFFER_IDS, at=MINUTES),
    command("admission_overdue", at=MINUTES),
    command("update_request", conditions=st.builds(Conditions, st.booleans(), st.booleans(), st.booleans()),
            expected_version=st.one_of(st.just(CURRENT), st.integers(0, 5)), at=MINUTES,
            actor=st.just("hospital:340780477")),
)
# The matcher and the HAD doing their job, soon after the latest event. Mixed in so that
# runs regularly get past acceptance.
COOPERATIVE = st.sampled_from(
    [
        Command(
            "record_offer",
            {"offer_id": FRESH, "had": "340000264", "hold_until": 30, "explanation": "",
             "by_desk": False, "at": Soon(1)},
        ),
        Command("accept", {"offer_id": CURRENT, "had": CURRENT, "at": Soon(2)}),
        Command("admit", {"had": CURRENT, "at": Soon(60)}),
        Command("discharge", {"had": CURRENT, "at": Soon(60 * 24 * 7)}),
    ]
)
# (st.one_of would flatten COMMANDS' twelve branches and drown the cooperative ones.)
STEP = st.sampled_from([COMMANDS, COMMANDS, COOPERATIVE]).flatmap(lambda kind: kind)
STEPS = st.lists(STEP, min_size=10, max_size=50)
# The conditions a referral is posted with: most complete, some waiting for a consent.
CONDITIONS = st.one_of(
    st.just(Conditions(True, True, True)),
    st.builds(Conditions, st.booleans(), st.booleans(), st.booleans()),
)
AVIS = st.one_of(
    st.none(),
    st.none(),
    st.builds(AvisHad, eligible=st.just(True), reason=st.none(), text=TEXT),
    st.builds(AvisHad, eligible=st.just(False), reason=REASONS, text=TEXT),
)


@dataclass
class Run:
    referral: Referral
    history: list[Event]
    t0: datetime


def start(make_request, avis: AvisHad | None, conditions: Conditions | None = None) -> Run:
    request = make_request(avis=avis, **({"conditions": conditions} if conditions else {}))
    history = Referral.request(request, request.requested_at)
    return Run(Referral.from_events(history), history, request.requested_at)


def play(run: Run, commands: list[Command]) -> Run:
    """Apply commands as the service would, checking each step stays on the graph."""
    for cmd in commands:
        before = copy.deepcopy(run.referral)
        try:
            events = cmd.run(run.referral, run.t0, run.history[-1].occurred_at)
        except IllegalTransition:
            events = []
        assert run.referral == before, "a decision mutated the referral"
        for produced in events:
            status = run.referral.status
            run.referral.apply(produced)
            event(f"visited {run.referral.status}")
            assert run.referral.status is status or run.referral.status in TRANSITIONS[status]
        run.history.extend(events)
        assert_consistent(run)
    return run


def assert_consistent(run: Run) -> None:
    """The invariants any state reachable through the lifecycle graph satisfies."""
    r = run.referral
    assert r.version == len(run.history)
    assert (r.status is Status.OFFERED) == (r.current_offer is not None)
    if r.current_offer is not None:
        assert r.current_offer.had_finess in r.tried_hads
        assert r.offer_hads[r.current_offer.offer_id] == r.current_offer.had_finess
    assert r.tried_hads <= set(r.offer_hads.values())
    assert (r.first_offer_at is None) == (not r.tried_hads)
    assert (r.accepted_had is None) == (r.accepted_at is None)
    if r.status in (Status.ACCEPTED, Status.ADMITTED, Status.DISCHARGED):
        assert r.accepted_had in r.tried_hads
    assert (r.admitted_had is not None) == (r.status in (Status.ADMITTED, Status.DISCHARGED))
    if r.admitted_had is not None:
        assert r.admitted_had == r.accepted_had
    assert (r.discharged_at is not None) == (r.status is Status.DISCHARGED)
    assert (r.closed_reason is not None) == (r.status in (Status.CANCELLED, Status.INELIGIBLE))
    if r.status is Status.INELIGIBLE:
        assert not r.tried_hads
    assert r.departments[0] == r.department
    assert len(set(r.departments)) == len(r.departments)
    assert r.is_open == (r.status not in CLOSED_STATUSES)
    # Only an INCOMPLETE referral (or one cancelled while it waited) lacks a condition, and it is
    # never offered while it waits.
    if r.missing_conditions:
        assert r.status in (Status.INCOMPLETE, Status.CANCELLED)
    if r.status is Status.INCOMPLETE:
        assert r.missing_conditions == r.request.conditions.missing() and not r.tried_hads


@settings(max_examples=300, deadline=None)
@given(avis=AVIS, conditions=CONDITIONS, commands=STEPS)
def test_any_command_sequence_stays_on_the_lifecycle_graph(make_request, avis, conditions, commands):
    play(start(make_request, avis, conditions), commands)


@settings(max_examples=200, deadline=None)
@given(avis=AVIS, conditions=CONDITIONS, commands=STEPS)
def test_replaying_the_produced_events_gives_the_same_state(make_request, avis, conditions, commands):
    run = play(start(make_request, avis, conditions), commands)
    assert Referral.from_events(run.history) == run.referral
    assert Referral.from_events(run.history).clocks() == run.referral.clocks()


# Routes to each closed status, so the terminal property does not rely on luck.
H = "340000181"
CLOSING_ROUTES = {
    "ineligible": [],
    "cancelled": [Command("cancel", {"reason": Reason.OTHER, "text": "", "at": 1})],
    "cancelled_while_offered": [
        Command("record_offer", {"offer_id": "o1", "had": H, "hold_until": 30,
                                 "explanation": "", "by_desk": False, "at": 1}),
        Command("cancel", {"reason": Reason.PATIENT_DECEASED, "text": "", "at": 2}),
    ],
    "discharged": [
        Command("record_offer", {"offer_id": "o1", "had": H, "hold_until": 30,
                                 "explanation": "", "by_desk": False, "at": 1}),
        Command("accept", {"offer_id": "o1", "had": H, "at": 5}),
        Command("admit", {"had": H, "at": 300}),
        Command("discharge", {"had": H, "at": 9000}),
    ],
}


@settings(max_examples=200, deadline=None)
@given(route=st.sampled_from(sorted(CLOSING_ROUTES)), commands=STEPS)
def test_a_closed_referral_never_changes_again(make_request, route, commands):
    avis = AvisHad(eligible=False, reason=Reason.MEDICAL_NOT_ELIGIBLE, text="")
    run = play(start(make_request, avis if route == "ineligible" else None), CLOSING_ROUTES[route])
    assert run.referral.status in CLOSED_STATUSES
    for cmd in commands:
        before = copy.deepcopy(run.referral)
        try:
            events = cmd.run(run.referral, run.t0, run.history[-1].occurred_at)
        except IllegalTransition:
            continue
        # The only possible event releases a place the matcher held meanwhile; it changes
        # nothing about the referral itself.
        assert all(isinstance(e, OfferWithdrawn) for e in events)
        for withdrawn in events:
            run.referral.apply(withdrawn)
        run.history.extend(events)
        assert_consistent(run)
        assert run.referral.status is before.status
        assert run.referral.current_offer is None and run.referral.clocks() == []
        assert run.referral.tried_hads == before.tried_hads
