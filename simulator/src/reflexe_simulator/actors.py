"""Simulated actors: the clock, the counters, HADs, coordination desks and the traffic loop.

Time: the simulator's clock runs ``speed`` times faster than real time (60 = one simulated
minute per real second). The platform keeps real time, so every delay the actors sample in
simulated time is divided by ``speed`` before sleeping, and timestamps sent to the platform
are real ones.

HAD answers are timed against the hold they were given (see ``answer_timing``): the platform's
hold may be scaled to the demo speed (``./reflexe up`` makes the 30-minute hold 7.5 real
seconds at 240x) or not, and the offer's journey to the HAD (matcher, relay, webhook or
polling) takes real time that no speed scales. So an on-time answer is drawn as a share of the
hold LEFT when the HAD hears of the offer (capped by ``hold_minutes`` simulated minutes), and
the few late ones really wait until the offer's ``hold_until`` has passed: the modelled rates
hold whatever the speed, the hold setting and the platform's latency.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from reflexe_common.geography import Geography
from reflexe_common.vocabulary import CapacityStatus, Reason, SourceKind

from reflexe_simulator import fhir
from reflexe_simulator.adt import Movement, MllpSender, build_message, visit_number
from reflexe_simulator.client import PlatformClient, Result
from reflexe_simulator.doors import Doors, PatientIdDomain, gateway_pseudonym
from reflexe_simulator.scenario import DepartmentScenario, HadSpec, Scenario, SourceSpec
from reflexe_simulator.traffic import (NEGATIVE_AVIS_REASONS, GeneratedReferral, PatientRecord, ReferralFactory,
                                       day_arrivals, own_key_pseudonym)
from reflexe_simulator.webhooks import Delivery

log = logging.getLogger("reflexe_simulator")
PARIS = ZoneInfo("Europe/Paris")

# HAD answers to an offer.
ACCEPT_RATE, DECLINE_RATE = 0.70, 0.25  # the rest (5%) never answers
DECLINE_REASONS: tuple[tuple[Reason, str, float], ...] = (
    (Reason.NO_CAPACITY, "plus de place infirmière cette semaine", 0.30),
    (Reason.CARE_NOT_PROVIDED, "soin non réalisable par nos équipes", 0.15),
    (Reason.SOCIAL_NOT_ELIGIBLE, "pas d'aidant au domicile", 0.15),
    (Reason.MEDICAL_NOT_ELIGIBLE, "médecin coordonnateur : patient non stabilisé", 0.12),
    (Reason.GP_REFUSED, "médecin traitant en désaccord", 0.08),
    (Reason.OUT_OF_ZONE, "adresse en limite de zone, trajet trop long", 0.05),
    (Reason.PATIENT_REFUSED, "le patient refuse l'HAD", 0.07),
    (Reason.INCOMPLETE_REQUEST, "prescription incomplète", 0.08),
)
# When HADs answer, as a share of the time left on the hold (lognormal, capped): median a third
# of it, slower at night; a small share answers only after the hold has expired.
ANSWER_MEDIAN_SHARE, ANSWER_SIGMA, ANSWER_MAX_SHARE = 0.35, 0.5, 0.85
NIGHT_SLOWDOWN = 1.5
LATE_SHARE_DAY, LATE_SHARE_NIGHT = 0.04, 0.08
ANSWER_MARGIN_SECONDS = 1.0  # real time the answer's own round trip needs before the hold ends
LATE_AFTER_HOLD_SECONDS = (1.0, 4.0)  # how long after the hold a late answer comes (real seconds)
# An answer that beats the platform's own record of the offer (the webhook can outrun the referral
# service's consumer) is sent again, while the hold runs.
NOT_YET_KNOWN_RETRY_SECONDS, NOT_YET_KNOWN_RETRIES = 0.5, 20
ADMISSION_MEDIAN_H, ADMISSION_SIGMA = 5.0, 0.6  # accepted → admitted, simulated hours
# The evaluation before admission: an HAD offered a referral that came without a favourable avis
# HAD often accepts it "pending evaluation" (its place held) and sends its liaison nurse to see the
# patient at the bedside (and the home, the caregiver). Most visits confirm the acceptance, with
# the nurse's avis; some find what this HAD cannot take on, and it withdraws, which releases the
# place and passes the referral on to the next HAD (so the reasons are the HAD's, not the patient's).
PENDING_EVALUATION_SHARE = 0.6  # of acceptances, by HADs answering through the REST API
EVALUATION_VISIT_MEDIAN_H, EVALUATION_VISIT_SIGMA, EVALUATION_VISIT_MAX_H = 2.0, 0.5, 8.0
# One visit in five ends in a withdrawal: the run's first, sixth, eleventh... so that even a short
# run has one (a coin would often give none out of the few evaluations of a demo minute).
WITHDRAWAL_EVERY = 5
WITHDRAWAL_REASONS: tuple[tuple[Reason, str, float], ...] = (
    (Reason.CARE_NOT_PROVIDED, "visite d'évaluation : soins plus lourds que ce que nos équipes assurent", 0.45),
    (Reason.NO_CAPACITY, "visite d'évaluation : passages infirmiers trop nombreux pour notre équipe cette semaine", 0.35),
    (Reason.OUT_OF_ZONE, "visite d'évaluation : domicile hors de portée de nos tournées", 0.20),
)
# The liaison nurse at the hospital: for a referral posted without an avis HAD (the ward or the ED
# sent it before she came by), she sees the patient hours later and gives it; a few are
# unfavourable, which closes the referral while no HAD holds a place.
BEDSIDE_AVIS_SHARE = 0.3
BEDSIDE_AVIS_DELAY_H = (0.5, 3.0)
BEDSIDE_UNFAVOURABLE_SHARE = 0.1
# A referred ED (or UHCD) patient leaves the emergency department this long after the referral
# (simulated hours): the hospital's A03, for those that send ADT.
ED_EXIT_MEDIAN_H, ED_EXIT_SIGMA, ED_EXIT_MAX_H = 1.5, 0.6, 8.0
INPATIENT_UNITS = ("Médecine polyvalente", "Gériatrie aiguë", "Pneumologie", "Cardiologie")
AVERAGE_STAY_DAYS = 28.0  # background patients' mean length of stay


class Counters:
    # The referral's paths beyond the first answer, each of which a simulated day must run at least
    # once: an acceptance pending evaluation confirmed; one withdrawn, the search then going on (an
    # offer to another HAD, or the desk alerted when no other HAD can take it); a liaison nurse's
    # avis after posting; a referral posted incomplete, updated with its
    # consents, then offered.
    PATHS = ("confirmed", "withdrawn", "searched_after_withdrawal", "avis_after_posting", "completed",
             "searched_after_update")
    ORDER = ("referrals_posted", "ineligible_posted", "offers_received", "offers_polled", "accepted", "declined",
             "no_answer", "answers_after_hold", "late_answers", "expired", "escalated", "desk_widen", "desk_offer", "desk_close", "admitted",
             "discharged", "cancelled", "overdue_alerts", "declarations",
             # The evaluation, the avis after posting, consents, planned referrals.
             "accepted_pending", "confirmed", "withdrawn", "searched_after_withdrawal", "offered_after_withdrawal",
             "avis_after_posting",
             "avis_updated", "avis_ineligible", "incomplete_posted", "completed", "searched_after_update", "offered_after_update",
             "offered_while_incomplete", "planned_posted", "webhooks_received", "webhooks_duplicate",
             "bad_signatures", "http_409", "http_errors", "unreachable",
             # Doors: how many went through each (REST, FHIR, HL7 over MLLP).
             "rest_referrals", "fhir_referrals", "rest_answers", "fhir_answers", "hl7_ed_exits",
             "hl7_hospitalisations", "hl7_had_admissions", "hl7_had_discharges", "hl7_sent", "hl7_not_accepted")
    SHORT = {"referrals_posted": "posted", "ineligible_posted": "ineligible", "offers_received": "offers",
             "offers_polled": "polled", "webhooks_received": "webhooks", "webhooks_duplicate": "dup",
             "bad_signatures": "bad_sig", "http_409": "409", "answers_after_hold": "after_hold", "http_errors": "errors",
             "overdue_alerts": "overdue"}

    def __init__(self) -> None:
        self.values: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self.values[name] += n

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def doors_line(self) -> str:
        v = self.values
        return (f"referrals REST {v['rest_referrals']} FHIR {v['fhir_referrals']}; answers REST {v['rest_answers']} "
                f"FHIR {v['fhir_answers']}; HL7 hospitals: ED exits {v['hl7_ed_exits']}, hospitalisations "
                f"{v['hl7_hospitalisations']}; HL7 HADs: admissions {v['hl7_had_admissions']}, discharges "
                f"{v['hl7_had_discharges']}; HL7 sent {v['hl7_sent']}, not acknowledged AA {v['hl7_not_accepted']}")

    def paths_line(self) -> str:
        v = self.values
        return (f"pending evaluation {v['accepted_pending']}: confirmed {v['confirmed']}, withdrawn {v['withdrawn']} "
                f"(then searched again {v['searched_after_withdrawal']}, offered to another HAD "
                f"{v['offered_after_withdrawal']}); avis after posting "
                f"{v['avis_after_posting']} (updates {v['avis_updated']}, ineligible {v['avis_ineligible']}); incomplete "
                f"{v['incomplete_posted']}: updated {v['completed']}, then searched {v['searched_after_update']}, offered "
                f"{v['offered_after_update']} (offered "
                f"while still incomplete: {v['offered_while_incomplete']}); planned {v['planned_posted']}")

    def line(self) -> str:
        parts = [f"{self.SHORT.get(k, k)}={self.values[k]}" for k in self.ORDER]
        parts += [f"{k}={v}" for k, v in sorted(self.values.items()) if k not in self.ORDER]
        return " ".join(parts)


class SimClock:
    def __init__(self, start: datetime, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start, self.speed = start.astimezone(PARIS), speed
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def real_seconds(self, sim_seconds: float) -> float:
        return max(0.0, sim_seconds / self.speed)

    async def sleep_sim(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real_seconds(sim_seconds))

    async def sleep_until(self, sim_time: datetime) -> None:
        await self.sleep_sim((sim_time - self.now()).total_seconds())


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def _is_night(t: datetime) -> bool:
    return t.hour >= 21 or t.hour < 7


def _by_day(at: datetime, rng: random.Random) -> datetime:
    """``at``, or the next morning (08:00-10:00) when it falls at night: visits and admissions happen by day."""
    if not _is_night(at):
        return at
    return (at if at.hour < 7 else at + timedelta(days=1)).replace(hour=8, minute=0) + timedelta(minutes=rng.uniform(0, 120))


@dataclass(frozen=True)
class AnswerTiming:
    real_delay: float  # real seconds from when the HAD hears of the offer to its answer
    sim_minutes: float  # the same delay in simulated minutes (what the output says)
    late: bool  # planned to come after the hold has expired


def answer_timing(rng: random.Random, hold_left_seconds: float, clock_speed: float, night: bool,
                  hold_minutes: float = 30.0) -> AnswerTiming:
    """When an HAD answers an offer whose hold ends in ``hold_left_seconds`` (real seconds).

    On time: a share of the usable window (the hold left, less the answer's round trip, and no
    longer than ``hold_minutes`` simulated minutes), so it lands within the hold; late (a few
    percent): shortly after the hold has really ended, so the platform expires the offer first."""
    if rng.random() < (LATE_SHARE_NIGHT if night else LATE_SHARE_DAY):
        real = max(0.0, hold_left_seconds) + rng.uniform(*LATE_AFTER_HOLD_SECONDS)
        return AnswerTiming(real, real * clock_speed / 60, True)
    window = min(max(0.0, hold_left_seconds - ANSWER_MARGIN_SECONDS), hold_minutes * 60 / clock_speed)
    share = min(ANSWER_MAX_SHARE, _lognormal(rng, ANSWER_MEDIAN_SHARE, ANSWER_SIGMA) * (NIGHT_SLOWDOWN if night else 1.0))
    real = share * window
    return AnswerTiming(real, real * clock_speed / 60, False)


@dataclass
class TrackedReferral:
    generated: GeneratedReferral
    had: str | None = None
    status: str = "REQUESTED"
    offers: set[str] = field(default_factory=set)
    in_ed: bool = False  # still in the emergency department (an ED or UHCD referral before its A03)
    pending_evaluation: bool = False  # accepted subject to the liaison nurse's visit, not yet confirmed
    withdrawn_by: set[str] = field(default_factory=set)  # HADs that withdrew their acceptance after the visit
    avis_given: bool = False  # a liaison nurse gave an avis after posting
    posted_incomplete: bool = False  # without patient consent or GP agreement: not to be offered as such
    completing: bool = False  # the hospital is sending (or sent) the missing consents
    counted: set[str] = field(default_factory=set)  # the paths already counted for this referral

    def count_once(self, counters: Counters, path: str) -> None:
        if path not in self.counted:
            self.counted.add(path)
            counters.inc(path)

    @property
    def has_favourable_avis(self) -> bool:
        avis = self.generated.body.get("avis")
        return self.avis_given or bool(avis and avis.get("eligible"))


class World:
    """Shared state and plumbing the actors use: client, clock, counters, task spawning."""

    def __init__(self, scenario: Scenario, client: PlatformClient, clock: SimClock, counters: Counters, *,
                 seed: int, hold_minutes: float = 30.0, dry_run: bool = False, doors: Doors | None = None,
                 adt: MllpSender | None = None, pseudonym_key: bytes | None = None) -> None:
        self.scenario, self.client, self.clock, self.counters = scenario, client, clock, counters
        self.rng = random.Random(f"reflexe-simulator-behaviour:{seed}")
        self.hold_minutes = hold_minutes
        self.dry_run = dry_run
        # Who uses which door (REST unless listed); ADT needs the MLLP sender, and a hospital's
        # ADT the key it shares with the gateway, so that its referrals' pseudonyms match.
        self.doors = doors or Doors()
        if (self.doors.hl7_hospitals or self.doors.hl7_hads) and adt is None:
            raise ValueError("establishments that send ADT need the gateway's MLLP address")
        if self.doors.hl7_hospitals and not pseudonym_key:
            raise ValueError("hospitals that send ADT need the pseudonym key they share with the gateway")
        self.adt = adt
        self.pseudonym_key = pseudonym_key
        # Where the hospitals' own patient records go, if anywhere (the privacy scan reads them).
        self.identity_sink: Callable[[PatientRecord], None] | None = None
        self.referrals: dict[str, TrackedReferral] = {}
        self.tasks: set[asyncio.Task] = set()
        self.hads: dict[str, HadActor] = {h.finess: HadActor(self, h) for h in scenario.hads}
        self.desks: dict[str, DeskActor] = {code: DeskActor(self, d) for code, d in scenario.departments.items()}

    def pseudonym_of(self, source: SourceSpec, patient: PatientRecord) -> str:
        """The pseudonym a source gives its referral: the gateway's, over its own patient number,
        when it also sends ADT (the gateway must find the referral from PID-3), else its own."""
        if self.doors.sends_adt(source.finess) and self.pseudonym_key:
            return gateway_pseudonym(self.pseudonym_key, patient.local_id, PatientIdDomain.of(source.finess).oid)
        return own_key_pseudonym(source, patient)

    def say(self, department: str, kind: str, message: str, level: int = logging.INFO) -> None:
        log.log(level, "[%s] %-3s %-11s %s", self.clock.now().strftime("%a %H:%M"), department, kind, message)

    def spawn(self, coro: Awaitable[Any], sim_delay: float = 0.0, real_delay: float | None = None) -> asyncio.Task:
        async def run() -> None:
            try:
                await asyncio.sleep(real_delay if real_delay is not None else self.clock.real_seconds(sim_delay))
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:  # an actor's bug must not stop the run
                log.exception("simulated action failed")

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if inspect.iscoroutine(coro):
            # Cancelled before its time (the run is ending): closed quietly, not "never awaited".
            task.add_done_callback(lambda _: coro.close())
        return task

    async def on_delivery(self, delivery: Delivery) -> None:
        self.counters.inc(f"wh:{delivery.type}")
        if delivery.recipient_kind == "had":
            had = self.hads.get(delivery.recipient)
            if had and delivery.type == "offer.proposed" and delivery.data.get("had_finess", had.spec.finess) == had.spec.finess:
                self.counters.inc("offers_received")
                had.on_offer(delivery.data)
            elif had and delivery.type == "offer.unanswered":
                self.say(had.spec.department, "alert", f"{had.spec.name}: offer {str(delivery.data.get('offer_id'))[:8]} unanswered")
        elif delivery.recipient_kind == "desk":
            desk = self.desks.get(delivery.recipient)
            if desk:
                desk.on_event(delivery.type, delivery.data)


class HadActor:
    """One HAD establishment: declares capacity, answers offers, admits and discharges."""

    def __init__(self, world: World, spec: HadSpec) -> None:
        self.world, self.spec = world, spec
        self.rng = random.Random(f"had:{world.scenario.seed}:{spec.finess}")
        self.background = round(spec.authorised_places * spec.initial_occupancy)  # patients not from the platform
        self.pending: set[str] = set()  # accepted, not yet admitted
        self.active: set[str] = set()  # admitted through the platform
        self.offers_seen: set[str] = set()
        self.admissions_today = 0
        self.day = world.clock.now().date()
        self.daily_admission_quota = max(2, round(spec.authorised_places / 15))
        self.last_drift = world.clock.now()

    # -- capacity --------------------------------------------------------------------------

    def places(self) -> int:
        return max(0, self.spec.authorised_places - self.background - len(self.pending) - len(self.active))

    def drift(self) -> None:
        """Background admissions and discharges since the last drift (patients from outside the platform)."""
        now = self.world.clock.now()
        days = max(0.0, (now - self.last_drift).total_seconds() / 86400)
        self.last_drift = now
        target = self.spec.authorised_places * self.spec.initial_occupancy
        out = sum(1 for _ in range(self.background) if self.rng.random() < days / AVERAGE_STAY_DAYS)
        arrivals = self.rng.gauss(target / AVERAGE_STAY_DAYS * days * 0.85, math.sqrt(max(days, 0.01)))
        self.background = max(0, min(self.spec.authorised_places, self.background - out + max(0, round(arrivals))))
        if now.date() != self.day:
            self.day, self.admissions_today = now.date(), 0

    def declaration(self) -> dict[str, Any]:
        places = self.places()
        status = CapacityStatus.OPEN
        u = self.rng.random()
        if u < 0.005:
            status, places = CapacityStatus.CLOSED, 0  # e.g. admissions suspended (staff shortage)
        elif places == 0 or u < 0.04:
            status = CapacityStatus.SATURATED
        possible = 0 if status != CapacityStatus.OPEN else min(places, max(0, self.daily_admission_quota - self.admissions_today))
        # The census is every patient in care: those from outside the platform and those it referred.
        return {"places_available": places, "admissions_possible_today": possible, "status": str(status),
                "active_patients": self.background + len(self.active), "declared_at": datetime.now(UTC).isoformat()}

    async def declare(self, why: str) -> Result:
        body = self.declaration()
        result = await self.world.client.declare(self.spec.finess, body)
        if result.ok:
            self.world.counters.inc("declarations")
            self.world.say(self.spec.department, "capacity",
                           f"{self.spec.name} declares {body['places_available']} places, {body['active_patients']} "
                           f"patients, {body['status']} ({why})")
        return result

    async def capacity_loop(self) -> None:
        """Re-declare periodically; a stale-prone HAD lets its declaration age (12–30 simulated hours)."""
        while True:
            hours = self.rng.uniform(14, 30) if self.spec.stale_prone else self.rng.uniform(1.5, 4)
            await self.world.clock.sleep_sim(hours * 3600)
            self.drift()
            await self.declare("periodic")

    # -- offers ----------------------------------------------------------------------------

    def on_offer(self, data: dict[str, Any]) -> None:
        offer_id, referral_id = str(data.get("offer_id", "")), str(data.get("referral_id", ""))
        if not offer_id or not referral_id or offer_id in self.offers_seen:
            return
        self.offers_seen.add(offer_id)
        world, rng = self.world, self.rng
        tracked = world.referrals.get(referral_id)
        if tracked is not None:
            if tracked.withdrawn_by - {self.spec.finess}:
                tracked.count_once(world.counters, "offered_after_withdrawal")
                tracked.count_once(world.counters, "searched_after_withdrawal")
            if tracked.posted_incomplete:
                # The platform offers an incomplete referral only once its consents are given.
                tracked.count_once(world.counters, "offered_after_update" if tracked.completing else "offered_while_incomplete")
                if tracked.completing:
                    tracked.count_once(world.counters, "searched_after_update")
        hold_until = _parse_time(data.get("hold_until")) or datetime.now(UTC) + timedelta(minutes=30)
        by = " (desk)" if data.get("by_desk") else ""
        world.say(self.spec.department, "offer", f"{self.spec.name} offered {referral_id[:8]}{by}, hold "
                                                 f"{max(0, (hold_until - datetime.now(UTC)).total_seconds()):.0f} real s left")
        self.drift()
        u = rng.random()
        if self.places() == 0:
            decision, reason = "decline", (Reason.NO_CAPACITY, "aucune place disponible")
        elif u < ACCEPT_RATE:
            decision, reason = ("accept_pending" if self.evaluates_first(tracked) else "accept"), None
        elif u < ACCEPT_RATE + DECLINE_RATE:
            decision = "decline"
            reason = rng.choices([(r, t) for r, t, _ in DECLINE_REASONS], weights=[w for *_, w in DECLINE_REASONS])[0]
            if tracked and not tracked.generated.body["conditions"]["caregiver_present"] and rng.random() < 0.5:
                reason = (Reason.SOCIAL_NOT_ELIGIBLE, "pas d'aidant au domicile")
        else:
            world.counters.inc("no_answer")
            world.say(self.spec.department, "no-answer", f"{self.spec.name} will not answer {referral_id[:8]}")
            return
        timing = answer_timing(rng, (hold_until - datetime.now(UTC)).total_seconds(), world.clock.speed,
                               _is_night(world.clock.now()), world.hold_minutes)
        if timing.late:
            world.counters.inc("answers_after_hold")
        world.spawn(self.answer(referral_id, offer_id, decision, reason, timing.sim_minutes, hold_until),
                    real_delay=timing.real_delay)

    def evaluates_first(self, tracked: TrackedReferral | None) -> bool:
        """Whether this HAD accepts pending its liaison nurse's evaluation: for a referral it knows
        (posted in this run) that has no favourable avis yet. Through the REST API: its FHIR Task has
        no form for the evaluation here."""
        if tracked is None or tracked.has_favourable_avis or self.world.doors.answers_fhir(self.spec.finess):
            return False
        return self.rng.random() < PENDING_EVALUATION_SHARE

    async def answer(self, referral_id: str, offer_id: str, decision: str, reason: tuple[Reason, str] | None,
                     sim_minutes: float, hold_until: datetime | None = None) -> None:
        world = self.world
        via_fhir = world.doors.answers_fhir(self.spec.finess)
        for attempt in range(NOT_YET_KNOWN_RETRIES + 1):
            result, not_yet_known = await self._send_answer(via_fhir, referral_id, offer_id, decision, reason)
            still_held = hold_until is not None and \
                datetime.now(UTC) + timedelta(seconds=NOT_YET_KNOWN_RETRY_SECONDS) < hold_until
            if not (not_yet_known and still_held) or attempt == NOT_YET_KNOWN_RETRIES:
                break
            await asyncio.sleep(NOT_YET_KNOWN_RETRY_SECONDS)
        after = f"after {sim_minutes:.0f} min"
        if result.conflict:
            world.counters.inc("late_answers")
            world.say(self.spec.department, "late", f"{self.spec.name} {decision} {referral_id[:8]} refused {after}: {result.code or 409}")
            return
        if not result.ok:
            return
        world.counters.inc("fhir_answers" if via_fhir else "rest_answers")
        tracked = world.referrals.get(referral_id)
        if decision in ("accept", "accept_pending"):
            evaluation = decision == "accept_pending"
            world.counters.inc("accepted")
            self.pending.add(referral_id)
            if tracked:
                tracked.had, tracked.status, tracked.pending_evaluation = self.spec.finess, "ACCEPTED", evaluation
            if evaluation:
                world.counters.inc("accepted_pending")
                world.say(self.spec.department, "accepted", f"{self.spec.name} accepts {referral_id[:8]} {after}, "
                                                            "pending its liaison nurse's evaluation")
                self.schedule_evaluation(referral_id)
            else:
                world.say(self.spec.department, "accepted", f"{self.spec.name} accepts {referral_id[:8]} {after}")
                self.schedule_admission(referral_id)
            if self.spec.pushes_on_change:
                await self.declare("after acceptance")
        else:
            world.counters.inc("declined")
            world.say(self.spec.department, "declined", f"{self.spec.name} declines {referral_id[:8]} {after}: {reason[0]}")

    async def _send_answer(self, via_fhir: bool, referral_id: str, offer_id: str, decision: str,
                           reason: tuple[Reason, str] | None) -> tuple[Result, bool]:
        """The answer through the HAD's door, and whether the platform did not know the offer yet
        (the webhook can outrun the referral service's own record of it: worth sending again)."""
        client, finess = self.world.client, self.spec.finess
        if not via_fhir:
            if decision == "accept":
                result = await client.accept(finess, referral_id, offer_id)
            elif decision == "accept_pending":
                result = await client.accept_pending_evaluation(finess, referral_id, offer_id)
            else:
                assert reason is not None
                result = await client.decline(finess, referral_id, offer_id, str(reason[0]), reason[1])
            return result, result.conflict and result.code == "NO_CURRENT_OFFER"
        # FHIR: read the Task, put it back answered (docs/integration-fhir.md, "An HAD answers").
        read = await client.fhir_read_task(finess, referral_id)
        if not read.ok or not isinstance(read.data, dict):
            return read, read.status == 404  # not the HAD's to see until the offer is recorded
        task = fhir.answered_task(read.data, offer_id, decision, str(reason[0]) if reason else None,
                                  reason[1] if reason else "")
        result = await client.fhir_update_task(finess, referral_id, task)
        return result, result.conflict and result.code == "NO_CURRENT_OFFER"

    async def _report_hl7(self, trigger: str, referral_id: str) -> bool | None:
        """An admission (A01) or a discharge (A03) by the HAD's system over MLLP, naming the
        referral in PV1-5; None when this HAD reports through the REST API instead."""
        world = self.world
        tracked = world.referrals.get(referral_id)
        if not world.doors.reports_hl7(self.spec.finess) or world.adt is None or tracked is None:
            return None  # a referral this run did not post (its patient unknown here) goes by REST
        patient = tracked.generated.patient
        assert patient is not None
        message = build_message(Movement(
            trigger=trigger, sender_finess=self.spec.finess, patient=patient, at=datetime.now(UTC), patient_class="I",
            unit="HAD", visit_number=visit_number(self.spec.finess, referral_id), referral_id=referral_id))
        ack = await world.adt.send(self.spec.finess, message)
        if ack.accepted:
            world.counters.inc("hl7_had_admissions" if trigger == "A01" else "hl7_had_discharges")
        return ack.accepted

    # -- evaluation before admission --------------------------------------------------------

    def schedule_evaluation(self, referral_id: str) -> None:
        """The liaison nurse's visit, by day, a few simulated hours after the acceptance."""
        world = self.world
        hours = min(EVALUATION_VISIT_MAX_H, _lognormal(self.rng, EVALUATION_VISIT_MEDIAN_H, EVALUATION_VISIT_SIGMA))
        world.spawn(self.evaluate(referral_id), sim_delay=(_by_day(world.clock.now() + timedelta(hours=hours), self.rng)
                                                            - world.clock.now()).total_seconds())

    async def evaluate(self, referral_id: str) -> None:
        """The visit's outcome: the acceptance confirmed with the nurse's avis, or withdrawn."""
        world = self.world
        tracked = world.referrals.get(referral_id)
        if tracked is None or tracked.status != "ACCEPTED" or not tracked.pending_evaluation:
            return  # cancelled meanwhile
        short = referral_id[:8]
        ended = world.counters["confirmed"] + world.counters["withdrawn"]
        if ended % WITHDRAWAL_EVERY == 0:
            reason, text = _weighted_choice(self.rng, WITHDRAWAL_REASONS)
            result = await world.client.withdraw_acceptance(self.spec.finess, referral_id, str(reason), text)
            if result.ok:
                tracked.status, tracked.had, tracked.pending_evaluation = "REQUESTED", None, False
                tracked.withdrawn_by.add(self.spec.finess)
                world.counters.inc("withdrawn")
                world.say(self.spec.department, "withdrawn", f"{self.spec.name} withdraws its acceptance of {short} after "
                                                             f"the evaluation: {reason}")
            self.pending.discard(referral_id)
            if result.ok and self.spec.pushes_on_change:
                await self.declare("after a withdrawal")
            return
        await give_avis(world, self.spec, tracked, True, None, "visite d'évaluation : avis favorable, domicile adapté")
        result = await world.client.confirm_evaluation(self.spec.finess, referral_id)
        if not result.ok:
            self.pending.discard(referral_id)  # cancelled meanwhile: the place is no longer held
            return
        tracked.pending_evaluation = False
        world.counters.inc("confirmed")
        world.say(self.spec.department, "confirmed", f"{self.spec.name} confirms {short} after its evaluation")
        self.schedule_admission(referral_id)

    # -- admission and discharge ------------------------------------------------------------

    def schedule_admission(self, referral_id: str) -> None:
        world = self.world
        hours = min(48.0, _lognormal(self.rng, ADMISSION_MEDIAN_H, ADMISSION_SIGMA))
        at = _by_day(world.clock.now() + timedelta(hours=hours), self.rng)  # admissions happen by day
        world.spawn(self.admit(referral_id), sim_delay=(at - world.clock.now()).total_seconds())

    async def admit(self, referral_id: str) -> None:
        world = self.world
        tracked = world.referrals.get(referral_id)
        if tracked and self.rng.random() < 0.03:  # the patient's condition changed before the HAD came
            reason = Reason.PATIENT_DECEASED if tracked.generated.palliative and self.rng.random() < 0.5 else Reason.PATIENT_HOSPITALISED
            if reason == Reason.PATIENT_HOSPITALISED:
                cancelled = await hospitalise(world, tracked.generated)
            else:
                result = await world.client.cancel(tracked.generated.source.finess, referral_id, str(reason),
                                                   "annulé par le service demandeur")
                cancelled = result.ok
            if cancelled:
                self.pending.discard(referral_id)
                tracked.status = "CANCELLED"
                world.counters.inc("cancelled")
                world.say(self.spec.department, "cancelled", f"{referral_id[:8]} cancelled by the source before admission: {reason}")
                return
        reported = await self._report_hl7("A01", referral_id)
        if reported is None:
            reported = (await world.client.admit(self.spec.finess, referral_id)).ok
        self.pending.discard(referral_id)
        if not reported:
            return
        self.active.add(referral_id)
        self.admissions_today += 1
        world.counters.inc("admitted")
        if tracked:
            tracked.status = "ADMITTED"
        world.say(self.spec.department, "admitted", f"{self.spec.name} admits {referral_id[:8]}")
        if self.spec.pushes_on_change:
            await self.declare("after admission")
        days = (tracked.generated.body["clinical"]["expected_duration_days"] if tracked else 14) * self.rng.uniform(0.6, 1.2)
        world.spawn(self.discharge(referral_id), sim_delay=days * 86400)

    async def discharge(self, referral_id: str) -> None:
        reported = await self._report_hl7("A03", referral_id)
        if reported is None:
            reported = (await self.world.client.discharge(self.spec.finess, referral_id)).ok
        self.active.discard(referral_id)
        if reported:
            self.world.counters.inc("discharged")
            self.world.say(self.spec.department, "discharged", f"{self.spec.name} discharges {referral_id[:8]}")
            if self.spec.pushes_on_change:
                await self.declare("after discharge")


class DeskActor:
    """The department's coordination desk: logs alerts, acts on escalated referrals."""

    def __init__(self, world: World, department: DepartmentScenario) -> None:
        self.world, self.department = world, department
        self.rng = random.Random(f"desk:{world.scenario.seed}:{department.code}")
        self.handled: set[tuple[str, int]] = set()
        self.escalations: Counter[str] = Counter()
        self.polling = False

    def on_event(self, event_type: str, data: dict[str, Any]) -> None:
        world, code = self.world, self.department.code
        rid = str(data.get("referral_id", ""))
        if event_type == "referral.escalated":
            self.escalated(rid, str(data.get("why", "")))
        elif event_type == "offer.expired":
            world.counters.inc("expired")
            world.say(code, "expired", f"offer on {rid[:8]} to {data.get('had_finess')} expired")
        elif event_type == "admission.overdue":
            world.counters.inc("overdue_alerts")
            world.say(code, "ALERT", f"admission overdue for {rid[:8]}")
        elif event_type == "offer.unanswered":
            world.say(code, "ALERT", f"offer on {rid[:8]} to {data.get('had_finess')} unanswered")
        elif event_type == "delivery.failed":
            world.say(code, "ALERT", f"webhook delivery failed: {data}")

    def escalated(self, referral_id: str, why: str = "", key: tuple | None = None) -> None:
        """Act on an escalation once (``key`` identifies it; each webhook is a new escalation)."""
        if key is None:
            self.escalations[referral_id] += 1
            key = (referral_id, "webhook", self.escalations[referral_id])
        if key in self.handled:
            return
        self.handled.add(key)
        self.world.counters.inc("escalated")
        tracked = self.world.referrals.get(referral_id)
        if tracked is not None and tracked.withdrawn_by:
            tracked.count_once(self.world.counters, "searched_after_withdrawal")
        if tracked is not None and tracked.completing:
            tracked.count_once(self.world.counters, "searched_after_update")
        self.world.say(self.department.code, "ESCALATED", f"{referral_id[:8]} {why}".strip())
        self.world.spawn(self.decide(referral_id), sim_delay=self.rng.uniform(5, 30) * 60)

    async def decide(self, referral_id: str) -> None:
        world, code, rng = self.world, self.department.code, self.rng
        got = await world.client.get_referral_as_desk(code, referral_id)
        if not got.ok or not isinstance(got.data, dict):
            return
        if got.data.get("status") not in ("ESCALATED", "REQUESTED"):
            return  # someone (or something) already acted
        if got.data.get("department") != code:
            return  # widened to this desk's department: the referral's own desk steers it
        searched = set(got.data.get("departments_searched") or [code])
        tried = set(got.data.get("tried_hads") or [])
        neighbours = sorted(Geography.load().neighbours(code) - searched)
        u = rng.random()
        if neighbours and len(searched) == 1 and u < 0.40:
            simulated = [n for n in neighbours if n in world.scenario.departments]
            chosen = simulated or rng.sample(neighbours, k=min(len(neighbours), rng.choice((1, 2))))
            result = await world.client.desk_widen(code, referral_id, sorted(chosen))
            if result.ok:
                world.counters.inc("desk_widen")
                world.say(code, "desk", f"widens {referral_id[:8]} to {', '.join(sorted(chosen))}")
            return
        if u < 0.75:
            had = await self.choose_had(tried)
            if had:
                result = await world.client.desk_offer(code, referral_id, had)
                if result.ok:
                    world.counters.inc("desk_offer")
                    world.say(code, "desk", f"offers {referral_id[:8]} to {had}")
                    return
        result = await world.client.desk_close(code, referral_id, str(Reason.OTHER), "pas de solution HAD")
        if result.ok:
            world.counters.inc("desk_close")
            tracked = world.referrals.get(referral_id)
            if tracked:
                tracked.status = "CANCELLED"
            world.say(code, "desk", f"closes {referral_id[:8]}: pas de solution HAD")

    async def choose_had(self, tried: set[str]) -> str | None:
        board = await self.world.client.capacity_board(self.department.code)
        lines = board.data.get("hads", []) if board.ok and isinstance(board.data, dict) else []
        candidates = [line for line in lines if line.get("finess") not in tried and line.get("status") == "OPEN"]
        candidates.sort(key=lambda line: (-(line.get("live_places") or 0), line.get("finess", "")))
        if candidates and (candidates[0].get("live_places") or 0) > 0:
            return candidates[0]["finess"]
        untried = [h.finess for h in self.department.hads if h.finess not in tried]
        return self.rng.choice(untried) if untried and self.rng.random() < 0.5 else None

    async def poll_loop(self, enabled: Callable[[], bool], every_sim_minutes: float = 5.0) -> None:
        """Fallback when webhooks are unavailable: read the desk's list of open referrals,
        hand offers addressed to simulated HADs to them and act on escalations."""
        world, code = self.world, self.department.code
        while True:
            await world.clock.sleep_sim(every_sim_minutes * 60)
            if not enabled():
                continue
            result = await world.client.open_referrals(code)
            if not result.ok or not isinstance(result.data, dict):
                continue
            for item in result.data.get("referrals", []):
                rid, offer = str(item.get("referral_id")), item.get("current_offer")
                if item.get("status") == "OFFERED" and offer and offer.get("had_finess") in world.hads:
                    had = world.hads[offer["had_finess"]]
                    if offer.get("offer_id") not in had.offers_seen:
                        world.counters.inc("offers_polled")
                        had.on_offer({"referral_id": rid, **offer})
                elif item.get("status") == "ESCALATED":
                    key = (rid, "poll", len(item.get("departments_searched") or []), len(item.get("tried_hads") or []))
                    self.escalated(rid, "(seen by polling)", key)


async def traffic_loop(world: World, department: DepartmentScenario, daily_volume: float, seed: int) -> None:
    """Post the department's referrals following the daily profile, day after day."""
    rng = random.Random(f"traffic:{seed}:{department.code}")
    factory = ReferralFactory(department, random.Random(f"referrals:{seed}:{department.code}"), world.identity_sink,
                              world.pseudonym_of)
    started = world.clock.now()
    day = started.replace(hour=0, minute=0, second=0, microsecond=0)
    while True:
        for at, kind in day_arrivals(rng, day, daily_volume):
            if at < started:
                continue  # the first day's hours before the run began
            # An arrival already due (the loop ran late) is posted at once, not skipped: a busy
            # event loop must not thin the traffic it is asked to drive.
            await world.clock.sleep_until(at)
            generated = factory.make(kind, datetime.now(UTC), world.clock.now(), world.clock.speed)
            world.spawn(post_referral(world, generated))
        day = (day + timedelta(days=1, hours=2)).replace(hour=0, minute=0)  # tolerant to DST changes


async def post_referral(world: World, generated: GeneratedReferral) -> None:
    body, source = generated.body, generated.source
    tracked = world.referrals[generated.referral_id] = TrackedReferral(generated, in_ed=bool(body.get("ed_arrival_at")))
    via_fhir = world.doors.posts_fhir(source.finess)
    if via_fhir:
        result = await world.client.fhir_create_service_request(source.finess, fhir.service_request(body),
                                                                generated.referral_id)
    else:
        result = await world.client.post_referral(source.finess, body)
    if not result.ok:
        world.say(generated.department, "error", f"referral {generated.referral_id[:8]} not posted: {result.status or 'unreachable'} "
                  f"{result.code or result.error}", logging.WARNING)
        return
    world.counters.inc("referrals_posted")
    if body["clinical"]["planned_date"]:
        world.counters.inc("planned_posted")
    if not (body["conditions"]["patient_consent"] and body["conditions"]["gp_agreement"]) and not generated.negative_avis:
        tracked.posted_incomplete = True
        world.counters.inc("incomplete_posted")
        world.spawn(complete_conditions(world, generated), sim_delay=world.rng.uniform(1, 6) * 3600)
    if (body["avis"] is None and body["source"]["kind"] in (SourceKind.ED, SourceKind.UHCD, SourceKind.WARD)
            and world.rng.random() < BEDSIDE_AVIS_SHARE):
        world.spawn(bedside_avis(world, generated), sim_delay=world.rng.uniform(*BEDSIDE_AVIS_DELAY_H) * 3600)
    world.counters.inc("fhir_referrals" if via_fhir else "rest_referrals")
    if tracked.in_ed and world.doors.sends_adt(source.finess):
        hours = min(ED_EXIT_MAX_H, _lognormal(world.rng, ED_EXIT_MEDIAN_H, ED_EXIT_SIGMA))
        world.spawn(ed_exit(world, generated), sim_delay=hours * 3600)
    if generated.negative_avis:
        world.counters.inc("ineligible_posted")
    clinical, patient = body["clinical"], body["patient"]
    commune = Geography.load().commune(patient["care_commune"])
    avis = " avis-" if generated.negative_avis else ""
    world.say(generated.department, "referral",
              f"{generated.referral_id[:8]} {body['source']['kind']:<5} MPP {clinical['main_mpp']} "
              f"{clinical['urgency']} {patient['place_of_care']} {commune.name if commune else patient['care_commune']}{avis}")
    if world.rng.random() < 0.015:  # the source cancels a waiting referral (patient hospitalised)
        world.spawn(cancel_waiting(world, generated), sim_delay=world.rng.uniform(2, 8) * 3600)


async def cancel_waiting(world: World, generated: GeneratedReferral) -> None:
    tracked = world.referrals.get(generated.referral_id)
    if tracked and tracked.status not in ("REQUESTED",):
        return
    if await hospitalise(world, generated):
        world.counters.inc("cancelled")
        world.say(generated.department, "cancelled", f"{generated.referral_id[:8]} cancelled by the source (still waiting)")


async def complete_conditions(world: World, generated: GeneratedReferral) -> None:
    """A referral posted before the GP (or the patient) could be asked waits as INCOMPLETE: hours later
    the hospital updates it with the consents, or, for a few, cancels it on a refusal."""
    conditions = generated.body["conditions"]
    tracked = world.referrals.get(generated.referral_id)
    if tracked and tracked.status != "REQUESTED":
        return
    finess, short_id = generated.source.finess, generated.referral_id[:8]
    if world.rng.random() < 0.1:
        reason = Reason.GP_REFUSED if conditions["patient_consent"] else Reason.PATIENT_REFUSED
        if (await world.client.cancel(finess, generated.referral_id, str(reason), "")).ok:
            world.counters.inc("cancelled")
            world.say(generated.department, "cancelled", f"{short_id} cancelled by the source: {reason}")
        return
    given = {"patient_consent": True, "gp_agreement": True}
    if tracked:
        tracked.completing = True  # its first offer may come before the update's answer
    if (await world.client.update_conditions(finess, generated.referral_id, given)).ok:
        world.counters.inc("completed")
        world.say(generated.department, "completed", f"{short_id} consents given: the search starts")


async def give_avis(world: World, had: HadSpec, tracked: TrackedReferral, eligible: bool, reason: Reason | None,
                    text: str) -> Result:
    """A liaison nurse of ``had``, working in the department it serves, gives (or updates) the avis HAD."""
    referral_id = tracked.generated.referral_id
    result = await world.client.give_avis(had.finess, had.department, referral_id, eligible,
                                          str(reason) if reason else None, text)
    if not result.ok:
        return result
    world.counters.inc("avis_after_posting")
    if tracked.avis_given or tracked.generated.body.get("avis"):
        world.counters.inc("avis_updated")
    tracked.avis_given = True
    closed = isinstance(result.data, dict) and result.data.get("status") == "INELIGIBLE"
    if closed:
        tracked.status = "INELIGIBLE"
        world.counters.inc("avis_ineligible")
    world.say(tracked.generated.department, "avis", f"{referral_id[:8]} avis HAD {'favourable' if eligible else 'unfavourable'}"
                                                    f" from {had.name}'s liaison nurse{': closed as ineligible' if closed else ''}")
    return result


async def bedside_avis(world: World, generated: GeneratedReferral) -> None:
    """The liaison nurse of the HAD serving the patient's commune comes by the ward or the ED and
    gives the avis HAD the referral was posted without, while the search is on."""
    tracked = world.referrals.get(generated.referral_id)
    if tracked is None or tracked.status != "REQUESTED" or tracked.avis_given:
        return  # accepted (its HAD's own nurse evaluates), or closed
    department = world.scenario.departments[generated.department]
    commune = generated.body["patient"]["care_commune"]
    had = next((h for h in department.hads if commune in h.zone_communes), department.hads[0])
    if world.rng.random() < BEDSIDE_UNFAVOURABLE_SHARE:
        reason, text = _weighted_choice(world.rng, NEGATIVE_AVIS_REASONS)
        await give_avis(world, had, tracked, False, reason, text)
    else:
        await give_avis(world, had, tracked, True, None, "IDE de liaison : avis HAD favorable")


def _weighted_choice(rng: random.Random, options: tuple[tuple[Reason, str, float], ...]) -> tuple[Reason, str]:
    return rng.choices([(r, t) for r, t, _ in options], weights=[w for *_, w in options])[0]


async def hospitalise(world: World, generated: GeneratedReferral) -> bool:
    """The referred patient is admitted as an inpatient, so the HAD referral is cancelled
    (PATIENT_HOSPITALISED): a hospital that sends ADT says so by HL7 (A06 from the emergency
    department, else an A01 inpatient admission), which the gateway turns into the cancellation;
    the others cancel through the REST API."""
    source, tracked = generated.source, world.referrals.get(generated.referral_id)
    if not world.doors.sends_adt(source.finess) or world.adt is None or generated.patient is None:
        result = await world.client.cancel(source.finess, generated.referral_id, str(Reason.PATIENT_HOSPITALISED),
                                           "hospitalisé en service conventionnel")
        return result.ok
    from_ed = tracked is not None and tracked.in_ed
    ed_visit = visit_number(source.finess, generated.referral_id)
    message = build_message(Movement(
        trigger="A06" if from_ed else "A01", sender_finess=source.finess, patient=generated.patient,
        at=datetime.now(UTC), patient_class="I", unit=world.rng.choice(INPATIENT_UNITS),
        # A06 turns the ED visit into an inpatient stay (same visit number); an A01 opens a new one.
        visit_number=ed_visit if from_ed else visit_number(source.finess, f"{generated.referral_id}/stay")))
    ack = await world.adt.send(source.finess, message)
    if not ack.accepted:
        return False
    world.counters.inc("hl7_hospitalisations")
    if tracked is not None:
        tracked.in_ed = False
    return True


async def ed_exit(world: World, generated: GeneratedReferral) -> None:
    """The referred patient leaves the emergency department: the hospital's A03, which records
    the ED exit time on the referral (unless the patient was hospitalised meanwhile)."""
    tracked = world.referrals.get(generated.referral_id)
    if tracked is None or not tracked.in_ed or world.adt is None or generated.patient is None:
        return
    source = generated.source
    message = build_message(Movement(
        trigger="A03", sender_finess=source.finess, patient=generated.patient, at=datetime.now(UTC), patient_class="E",
        unit=str(generated.body["source"].get("unit") or "SAU"), visit_number=visit_number(source.finess, generated.referral_id)))
    ack = await world.adt.send(source.finess, message)
    if ack.accepted:
        tracked.in_ed = False
        world.counters.inc("hl7_ed_exits")
        world.say(generated.department, "ed-exit", f"{generated.referral_id[:8]} left the ED ({source.name}, HL7 A03)")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
