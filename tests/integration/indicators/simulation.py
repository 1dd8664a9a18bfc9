"""A deterministic simulated month of referral and capacity events (plain records), their
protobuf/CloudEvents encoding, and an independent oracle: the indicator set computed in plain
Python straight from the raw records — no SQL, no code shared with the service.

The month is March 2025 in departments 972, 973 and 974 (overseas, each on its own clock: UTC-4,
UTC-3, UTC+4) and 2A (Paris time, with the DST change of 30 March), each its own region and
used by no other test in 2025, with late and out-of-order deliveries, a cohort of long stays
admitted in February, stale declarations, declines, expiries, escalations, desk offers,
cancellations with withdrawn offers and negative avis, ED arrivals and exits (exits recorded up
to a day after they happened, some referrals without a known arrival), planned referrals
(admitted before, on or after their planned day; a few PLANNED without a date, as older events
may be), and favourable avis HAD. The evaluation before admission: acceptances pending evaluation,
the liaison nurse's avis after posting (sometimes updated), then a confirmation, or a withdrawal
after which the next HAD is offered the referral; in each department, scripted referrals whose
first HAD withdraws its pending acceptance and whose second accepts it plainly (the referral's
acceptance is the second HAD's); favourable avis after posting on referrals still searched. The
second HAD of each department declares its census (all its active patients) on most
declarations from the 9th on, around the viability threshold of 50; the others never do, so
their occupancy and viability stay on the platform's own patients.
"""

from __future__ import annotations

import csv
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from reflexe.v1 import capacity_pb2 as cpb
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import ts, wrap
from reflexe_common.finess import with_key
from tests.support.data import pseudonym
from tests.support.territory import own_named_department

PARIS = ZoneInfo("Europe/Paris")
DEPARTMENTS = {"972": "02", "973": "03", "974": "04", "2A": "94"}  # department -> its region
# Each department's clock, written out here rather than read from the platform's geography.
ZONES = {"972": ZoneInfo("America/Martinique"), "973": ZoneInfo("America/Cayenne"), "974": ZoneInfo("Indian/Reunion"),
         "2A": PARIS}
# This module's own: the oracle reads these departments and their regions whole, so nobody else is
# handed them, nor Corsica's other department (2B), which region 94 also covers.
for _code in (*DEPARTMENTS, "2B"):
    own_named_department(_code)
DEPARTMENTS_CSV = Path(__file__).resolve().parents[3] / "libs/common/src/reflexe_common/geography/data/departments.csv"
REASONS = ["NO_CAPACITY", "OUT_OF_ZONE", "CARE_NOT_PROVIDED", "MEDICAL_NOT_ELIGIBLE", "SOCIAL_NOT_ELIGIBLE",
           "PATIENT_REFUSED", "GP_REFUSED", "INCOMPLETE_REQUEST", "PATIENT_HOSPITALISED", "PATIENT_DECEASED", "OTHER"]
KINDS = ["ED", "UHCD", "EHPAD", "GP", "WARD"]
NAMESPACE = uuid.UUID("6f1c1c3e-93a5-4f5e-9d0e-7d1b2c3a4b5c")


@dataclass
class Ev:
    """One raw event: what happened, when, to what."""
    kind: str
    at: datetime
    department: str
    referral_id: str = ""
    fields: dict = field(default_factory=dict)
    event_id: str = ""


def _finess(dept: str, kind: str, n: int) -> str:
    return with_key(f"{dept}{kind}{n:0{6 - len(dept)}d}")


def hads(dept: str) -> list[str]:
    return [_finess(dept, "99", n) for n in range(3)]


def sources(dept: str) -> list[tuple[str, str]]:
    return [(_finess(dept, "88", n), KINDS[(n + (dept == "973")) % len(KINDS)]) for n in range(4)]


def _t(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))


def generate(seed: int = 7, referrals: int = 520, long_stays: int = 80) -> list[Ev]:
    rng = random.Random(seed)
    # ED arrivals and exits, planned dates and avis draw from their own streams: the rest of the
    # month stays as it was.
    ed_rng = random.Random(seed * 1009 + 1)
    plan_rng = random.Random(seed * 2003 + 5)
    census_rng = random.Random(seed * 3001 + 11)
    eval_rng = random.Random(seed * 4001 + 13)
    events: list[Ev] = []
    base = datetime(2025, 3, 1, tzinfo=PARIS).astimezone(UTC)

    # Capacity declarations: frequent, with some gaps longer than the 12 h staleness threshold.
    for dept in DEPARTMENTS:
        for i, had in enumerate(hads(dept)):
            authorised = 60 if (dept, i) == ("972", 0) else rng.choice([20, 30, 40])
            at = base - timedelta(days=4, hours=rng.randrange(24))
            while at < base + timedelta(days=36):
                census = None
                if i == 1 and at >= base + timedelta(days=8) and census_rng.random() < 0.7:
                    census = census_rng.randrange(35, 70)
                events.append(Ev("CapacityDeclared", at, dept, fields={
                    "had": had, "authorised": authorised, "places": rng.randrange(0, 10), "status": "OPEN",
                    "census": census}))
                at += timedelta(hours=rng.choice([2, 3, 5, 8, 10, 11]) if rng.random() < 0.85 else rng.choice([13, 18, 30]),
                                minutes=rng.randrange(60))
            if i == 2:  # a later authorisation change
                events.append(Ev("CapacityDeclared", base + timedelta(days=15, seconds=17), dept, fields={
                    "had": had, "authorised": authorised + 10, "places": 3, "status": "SATURATED"}))

    def referral(dept: str, requested: datetime, long_stay: bool = False, withdrawn_then_next: bool = False) -> None:
        """`withdrawn_then_next`: the first HAD accepts pending evaluation and withdraws, the second accepts."""
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        finess, kind = rng.choice(sources(dept))
        place = "EHPAD" if kind == "EHPAD" or rng.random() < 0.15 else "HOME"
        e = lambda kind_, at, **f: events.append(Ev(kind_, at, dept, rid, f))  # noqa: E731
        arrival = None
        if kind in ("ED", "UHCD") and ed_rng.random() < 0.85:
            arrival = requested - timedelta(minutes=ed_rng.randrange(20, 900))
        # A planned referral: a date from the request's local day to a week later; a few PLANNED
        # without a date (older events), measured as urgent.
        urgency, planned_date = "WITHIN_24H", None
        if not long_stay and plan_rng.random() < 0.3:
            urgency = "PLANNED"
            if plan_rng.random() < 0.9:
                planned_date = requested.astimezone(ZONES[dept]).date() + timedelta(days=plan_rng.randrange(0, 8))
        ineligible = not long_stay and not withdrawn_then_next and rng.random() < 0.08
        avis = "UNFAVOURABLE" if ineligible else ("FAVOURABLE" if plan_rng.random() < 0.3 else None)
        e("ReferralRequested", requested, source_finess=finess, source_kind=kind, place=place, ed_arrival=arrival,
          urgency=urgency, planned_date=planned_date, avis=avis)
        if kind in ("ED", "UHCD") and ed_rng.random() < 0.75:
            # The exit is recorded when the hospital's A03 reaches the platform, up to a day later.
            exited = requested + timedelta(minutes=ed_rng.randrange(-10, 2000))
            if arrival is not None:
                exited = max(exited, arrival)
            e("EdExitRecorded", exited + timedelta(minutes=ed_rng.randrange(0, 1500)), exited=exited)
        t = requested
        if long_stay:
            had = hads(dept)[0]
            oid = f"{rid}:1"
            t += timedelta(minutes=rng.randrange(5, 90))
            e("OfferMade", t, offer_id=oid, had=had, by_desk=False)
            t += timedelta(minutes=rng.randrange(1, 25))
            e("OfferAccepted", t, offer_id=oid, had=had)
            t += timedelta(hours=rng.randrange(2, 60))
            e("PatientAdmitted", t, had=had, place=place if rng.random() < 0.5 else "")
            if rng.random() < 0.8:
                e("PatientDischarged", _t(rng, base, base + timedelta(days=36)), had=had)
            return
        if ineligible:
            e("ReferralDeclaredIneligible", t + timedelta(minutes=rng.randrange(5, 120)), reason=rng.choice(REASONS))
            return
        if eval_rng.random() < 0.12:  # a liaison nurse's favourable avis while the search goes on
            e("AvisGiven", t + timedelta(minutes=eval_rng.randrange(1, 200)), had=eval_rng.choice(hads(dept)),
              avis="FAVOURABLE")
        candidates = rng.sample(hads(dept), 3)
        accepted = None
        for n, had in enumerate(candidates):
            oid = f"{rid}:{n + 1}"
            t += timedelta(minutes=rng.randrange(1, 240))
            e("OfferMade", t, offer_id=oid, had=had, by_desk=False)
            roll = rng.random()
            if withdrawn_then_next:
                roll = 0.3  # accepted (pending evaluation by the first HAD, plainly by the second)
            if roll < 0.06:  # cancelled while the offer is out: the offer is withdrawn
                t += timedelta(minutes=rng.randrange(1, 20))
                e("ReferralCancelled", t, reason=rng.choice(REASONS))
                e("OfferWithdrawn", t + timedelta(seconds=1), offer_id=oid, had=had)
                return
            if roll < 0.55:
                t += timedelta(minutes=rng.randrange(1, 29))
                pending = n == 0 if withdrawn_then_next else eval_rng.random() < 0.3
                if not pending:
                    e("OfferAccepted", t, offer_id=oid, had=had)
                    accepted = had
                    break
                # Accepted subject to the liaison nurse's visit: her avis (sometimes updated,
                # sometimes none), then the HAD confirms or withdraws, hours later.
                e("OfferAccepted", t, offer_id=oid, had=had, pending_evaluation=True)
                withdraws = withdrawn_then_next or eval_rng.random() < 0.4
                if eval_rng.random() < 0.85:
                    t += timedelta(hours=eval_rng.randrange(0, 30), minutes=eval_rng.randrange(1, 60))
                    if eval_rng.random() < 0.15:
                        e("AvisGiven", t, had=had, avis="UNFAVOURABLE" if not withdraws else "FAVOURABLE")
                        t += timedelta(minutes=eval_rng.randrange(5, 120))
                    e("AvisGiven", t, had=had, avis="UNFAVOURABLE" if withdraws else "FAVOURABLE")
                t += timedelta(minutes=eval_rng.randrange(1, 600))
                if withdraws:  # the place is released and the search goes on with the next HAD
                    e("AcceptanceWithdrawn", t, offer_id=oid, had=had, reason=eval_rng.choice(REASONS))
                    continue
                e("EvaluationConfirmed", t, offer_id=oid, had=had)
                accepted = had
                break
            if roll < 0.8:
                t += timedelta(minutes=rng.randrange(1, 29))
                e("OfferDeclined", t, offer_id=oid, had=had, reason=rng.choice(REASONS + ["SOMETHING_NEW"]))
            else:
                t += timedelta(minutes=30)
                e("OfferExpired", t, offer_id=oid, had=had)
        if accepted is None:
            t += timedelta(seconds=5)
            e("ReferralEscalated", t)
            if rng.random() < 0.3:
                t += timedelta(hours=rng.randrange(1, 6))
                e("ReferralEscalated", t)  # escalated again: counted once, at the first
            if rng.random() < 0.5:
                had = rng.choice(hads(dept))
                oid = f"{rid}:desk"
                t += timedelta(minutes=rng.randrange(10, 300))
                e("OfferMade", t, offer_id=oid, had=had, by_desk=True)
                t += timedelta(minutes=rng.randrange(1, 29))
                e("OfferAccepted", t, offer_id=oid, had=had)
                accepted = had
            elif rng.random() < 0.5:
                e("ReferralCancelled", t + timedelta(hours=rng.randrange(1, 30)), reason=rng.choice(REASONS))
                return
            else:
                return
        if rng.random() < 0.07:
            e("ReferralCancelled", t + timedelta(hours=rng.randrange(1, 10)), reason=rng.choice(REASONS))
            return
        t += timedelta(hours=rng.randrange(1, 40), minutes=rng.randrange(60))
        if planned_date is not None:
            # Around the planned day, on the department's clock: before it, during it, or late.
            day_start = datetime.combine(planned_date, datetime.min.time(), ZONES[dept])
            t = max(t, day_start + timedelta(hours=plan_rng.randrange(-20, 40), minutes=plan_rng.randrange(60)))
        e("PatientAdmitted", t, had=accepted, place=place if rng.random() < 0.5 else "")
        if rng.random() < 0.7:
            e("PatientDischarged", t + timedelta(days=rng.choice([0, 0, 1, 2, 3, 5, 8, 13, 21]), hours=rng.randrange(12)),
              had=accepted)

    for i in range(long_stays):
        referral("972", base - timedelta(days=9) + timedelta(minutes=rng.randrange(6 * 24 * 60)), long_stay=True)
    # Near the overseas midnights: each lands on another local day than in Paris.
    for dept in ("972", "974"):
        for day in (3, 17):
            local_midnight = datetime(2025, 3, day, tzinfo=ZONES[dept])
            for minutes in (-25, -5, 5, 25):
                referral(dept, local_midnight + timedelta(minutes=minutes))
    for i in range(referrals):
        dept = rng.choice(list(DEPARTMENTS))
        referral(dept, _t(rng, base - timedelta(days=2), base + timedelta(days=31)))

    # The referral's acceptance is the second HAD's, not the withdrawn first one's.
    for dept in DEPARTMENTS:
        for day in (6, 20):
            referral(dept, datetime(2025, 3, day, 10, tzinfo=ZONES[dept]), withdrawn_then_next=True)

    for n, ev in enumerate(events):
        ev.event_id = str(uuid.uuid5(NAMESPACE, f"{seed}:{n}"))
    # Delivery order: by time, then 15 % delivered late (at the end, shuffled) and a few
    # referrals delivered backwards (outcomes before offers, admissions before requests).
    ordered = sorted(events, key=lambda ev: (ev.at, ev.event_id))
    late = [ev for ev in ordered if rng.random() < 0.15]
    late_ids = {ev.event_id for ev in late}
    ordered = [ev for ev in ordered if ev.event_id not in late_ids]
    rng.shuffle(late)
    backwards = set(rng.sample(sorted({ev.referral_id for ev in ordered if ev.referral_id}), 10))
    tail = sorted((ev for ev in ordered if ev.referral_id in backwards), key=lambda ev: ev.at, reverse=True)
    ordered = [ev for ev in ordered if ev.referral_id not in backwards] + tail + late
    return ordered


def encode(ev: Ev) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(topic, value, headers) of a raw event."""
    f = ev.fields
    if ev.kind == "CapacityDeclared":
        m = cpb.CapacityDeclared(had_finess=f["had"], department=ev.department, places_available=f["places"],
                                 admissions_possible_today=1, status=f["status"], declared_at=ts(ev.at),
                                 authorised_places=f["authorised"])
        if f.get("census") is not None:
            m.active_patients = f["census"]
        topic = "reflexe.capacity.events.v1"
    else:
        actor = f"liaison:{f['had']}" if ev.kind == "AvisGiven" else "system"
        header = pb.ReferralEventHeader(referral_id=ev.referral_id, department=ev.department, occurred_at=ts(ev.at),
                                        actor=actor)
        topic = "reflexe.referral.events.v1"
        if ev.kind == "ReferralRequested":
            avis = None
            if f.get("avis"):
                avis = pb.AvisHad(eligible=f["avis"] == "FAVOURABLE",
                                  reason="" if f["avis"] == "FAVOURABLE" else "MEDICAL_NOT_ELIGIBLE")
            m = pb.ReferralRequested(header=header, request=pb.ReferralRequest(
                referral_id=ev.referral_id, department=ev.department,
                source=pb.Source(kind=f["source_kind"], finess=f["source_finess"]),
                patient=pb.Patient(pseudonym=pseudonym(ev.referral_id), birth_year=1940, sex="F", care_commune=f"{ev.department}209",
                                   place_of_care=f["place"]),
                clinical=pb.Clinical(main_mpp="04", urgency=f.get("urgency", "WITHIN_24H"),
                                     planned_date=f["planned_date"].isoformat() if f.get("planned_date") else ""),
                requested_at=ts(ev.at), ed_arrival_at=ts(f["ed_arrival"]) if f.get("ed_arrival") else None, avis=avis))
        elif ev.kind == "EdExitRecorded":
            m = pb.EdExitRecorded(header=header, exited_at=ts(f["exited"]))
        elif ev.kind == "ReferralDeclaredIneligible":
            m = pb.ReferralDeclaredIneligible(header=header, reason=f["reason"])
        elif ev.kind == "OfferMade":
            m = pb.OfferMade(header=header, offer_id=f["offer_id"], had_finess=f["had"], by_desk=f["by_desk"],
                             hold_until=ts(ev.at + timedelta(minutes=30)))
        elif ev.kind == "OfferAccepted":
            m = pb.OfferAccepted(header=header, offer_id=f["offer_id"], had_finess=f["had"],
                                 pending_evaluation=f.get("pending_evaluation", False))
        elif ev.kind == "EvaluationConfirmed":
            m = pb.EvaluationConfirmed(header=header, offer_id=f["offer_id"], had_finess=f["had"])
        elif ev.kind == "AcceptanceWithdrawn":
            m = pb.AcceptanceWithdrawn(header=header, offer_id=f["offer_id"], had_finess=f["had"], reason=f["reason"])
        elif ev.kind == "AvisGiven":
            m = pb.AvisGiven(header=header, eligible=f["avis"] == "FAVOURABLE",
                             reason="" if f["avis"] == "FAVOURABLE" else "MEDICAL_NOT_ELIGIBLE")
        elif ev.kind == "OfferDeclined":
            m = pb.OfferDeclined(header=header, offer_id=f["offer_id"], had_finess=f["had"], reason=f["reason"])
        elif ev.kind == "OfferExpired":
            m = pb.OfferExpired(header=header, offer_id=f["offer_id"], had_finess=f["had"])
        elif ev.kind == "OfferWithdrawn":
            m = pb.OfferWithdrawn(header=header, offer_id=f["offer_id"], had_finess=f["had"], why="cancelled")
        elif ev.kind == "ReferralEscalated":
            m = pb.ReferralEscalated(header=header, why="no HAD left")
        elif ev.kind == "PatientAdmitted":
            m = pb.PatientAdmitted(header=header, had_finess=f["had"], place_of_care=f["place"])
        elif ev.kind == "PatientDischarged":
            m = pb.PatientDischarged(header=header, had_finess=f["had"])
        elif ev.kind == "ReferralCancelled":
            m = pb.ReferralCancelled(header=header, reason=f["reason"])
        else:
            raise ValueError(ev.kind)
    envelope = wrap(m, "test:indicators-simulation", event_id=ev.event_id)
    return topic, envelope.value(), envelope.headers()


# -- the oracle ---------------------------------------------------------------------------------

def population(level: str, key: str) -> int | None:
    """Inhabitants of a department or region, summed from the geography data file by hand."""
    with DEPARTMENTS_CSV.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if level == "department":
        return next((int(r["population"]) for r in rows if r["code"] == key), None)
    if level == "region":
        return sum(int(r["population"]) for r in rows if r["region_code"] == key) or None
    return None


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    pos = p * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _code(reason: str | None) -> str:
    return reason if reason in REASONS else "OTHER"


def oracle(events: list[Ev], level: str, period: str, first: date, last: date, now: datetime,
           stale_after: timedelta = timedelta(minutes=720), zones: dict | None = None,
           pending_is_acceptance: bool = False) -> dict[tuple[str, str], dict]:
    """Every indicator for the days first..last (whole periods), by plain loops over the events.
    `zones` replaces the departments' clocks, `pending_is_acceptance` takes an acceptance pending
    evaluation for the referral's acceptance even when withdrawn (both to show the rules matter)."""
    zones = ZONES if zones is None else zones

    def local_day(t: datetime, department: str) -> date:
        return t.astimezone(zones.get(department, PARIS)).date()

    def midnight(d: date, department: str) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=zones.get(department, PARIS)).astimezone(UTC)

    def label(d: date) -> str:
        return d.strftime("%Y-%m") if period == "month" else d.isoformat()

    def in_range(d: date) -> bool:
        if period == "month":
            return (first.year, first.month) <= (d.year, d.month) <= (last.year, last.month)
        return first <= d <= last

    # Referrals and offers, folded by hand: earliest event of each kind.
    refs: dict[str, dict] = {}
    offers: dict[str, dict] = {}
    avis_after_posting: list[Ev] = []
    for ev in events:
        if not ev.referral_id:
            continue
        r = refs.setdefault(ev.referral_id, {"department": ev.department})
        f = ev.fields

        def earliest(name, **companions):
            if r.get(name) is None or ev.at < r[name]:
                r[name] = ev.at
                r.update(companions)

        if ev.kind == "ReferralRequested":
            r.update(requested=ev.at, source=f["source_finess"], kind=f["source_kind"], place=f["place"],
                     ed_arrival=f.get("ed_arrival"), avis=f.get("avis"),
                     # Planned: PLANNED with a date; anything else is held to the 24-hour target.
                     planned_date=f.get("planned_date") if f.get("urgency") == "PLANNED" else None)
        elif ev.kind == "EdExitRecorded":
            if r.get("ed_exit") is None or f["exited"] < r["ed_exit"]:
                r["ed_exit"] = f["exited"]
        elif ev.kind == "ReferralDeclaredIneligible":
            earliest("ineligible", ineligible_reason=f["reason"])
        elif ev.kind == "OfferMade":
            earliest("first_offer", first_offer_had=f["had"])
            offers.setdefault(f["offer_id"], {}).update(referral=ev.referral_id, department=ev.department, had=f["had"], made=ev.at)
        elif ev.kind in ("OfferAccepted", "OfferDeclined", "OfferExpired", "OfferWithdrawn"):
            o = offers.setdefault(f["offer_id"], {})
            o.update(referral=ev.referral_id, department=ev.department, had=f["had"])
            if o.get("outcome_at") is None or ev.at < o["outcome_at"]:
                o.update(outcome_at=ev.at, outcome=ev.kind[5:].upper(), reason=f.get("reason"),
                         pending=bool(f.get("pending_evaluation")))
            # Pending evaluation, the HAD has answered; the referral is accepted at the confirmation.
            if ev.kind == "OfferAccepted" and (pending_is_acceptance or not f.get("pending_evaluation")):
                earliest("accepted", accepted_had=f["had"])
        elif ev.kind in ("EvaluationConfirmed", "AcceptanceWithdrawn"):
            o = offers.setdefault(f["offer_id"], {})
            o.update(referral=ev.referral_id, department=ev.department, had=f["had"])
            if o.get("evaluated_at") is None or ev.at < o["evaluated_at"]:
                o.update(evaluated_at=ev.at, evaluation="CONFIRMED" if ev.kind == "EvaluationConfirmed" else "WITHDRAWN")
            if ev.kind == "EvaluationConfirmed" and not pending_is_acceptance:
                earliest("accepted", accepted_had=f["had"])
        elif ev.kind == "AvisGiven":
            avis_after_posting.append(ev)
        elif ev.kind == "ReferralEscalated":
            earliest("escalated")
        elif ev.kind == "PatientAdmitted":
            earliest("admitted", admitted_had=f["had"], admitted_place=f["place"] or None)
        elif ev.kind == "PatientDischarged":
            earliest("discharged")
        elif ev.kind == "ReferralCancelled":
            earliest("cancelled", cancel_reason=f["reason"])

    def key_of(department: str | None, source: str | None, had: str | None) -> str | None:
        return {"department": department, "region": DEPARTMENTS.get(department or ""), "source": source, "had": had}[level]

    rows: dict[tuple[str, str], dict] = {}

    def row(d: date, key: str) -> dict:
        p = d.replace(day=1) if period == "month" else d
        return rows.setdefault((label(p), key), {"_durations": {"first_offer": [], "acceptance": [], "admission": [],
                                                                 "ed_stay": [], "evaluation": []}})

    def add(r: dict, name: str, n: float = 1) -> None:
        r[name] = r.get(name, 0) + n

    for r in refs.values():
        src, dept = r.get("source"), r["department"]
        if r.get("requested") and level != "had":
            d = local_day(r["requested"], dept)
            k = key_of(dept, src, None)
            if in_range(d) and k:
                x = row(d, k)
                add(x, "referrals_received")
                add(x, f"received_{r['kind']}")
                add(x, "received_planned" if r.get("planned_date") else "received_urgent")
                if r.get("admitted"):
                    add(x, "_cohort")
                if r.get("avis"):
                    add(x, "avis_given")
                    add(x, f"avis_{r['avis'].lower()}")
                    for outcome in ("admitted", "cancelled", "ineligible"):
                        if r.get(outcome):
                            add(x, f"avis_{outcome}")
        for name, column, reason in (("ineligible", "ineligible", "ineligible_reason"), ("escalated", "escalations", None),
                                     ("cancelled", "cancellations", "cancel_reason")):
            if r.get(name) and level != "had":
                d = local_day(r[name], dept)
                k = key_of(dept, src, None)
                if in_range(d) and k:
                    x = row(d, k)
                    add(x, column)
                    if reason:
                        add(x, f"{'ineligible' if name == 'ineligible' else 'cancelled'}_{_code(r[reason])}")
        if r.get("ed_exit") and level != "had":  # the referring hospital's ED stay, by the exit's period
            d = local_day(r["ed_exit"], dept)
            k = key_of(dept, src, None)
            if in_range(d) and k:
                x = row(d, k)
                add(x, "ed_exits")
                if r.get("ed_arrival"):
                    x["_durations"]["ed_stay"].append((r["ed_exit"] - r["ed_arrival"]).total_seconds() / 60)
        for name, had_field in (("first_offer", "first_offer_had"), ("accepted", "accepted_had"), ("admitted", "admitted_had")):
            if r.get(name):
                d = local_day(r[name], dept)
                k = key_of(dept, src, r.get(had_field))
                if not (in_range(d) and k):
                    continue
                x = row(d, k)
                bucket = {"first_offer": "first_offer", "accepted": "acceptance", "admitted": "admission"}[name]
                planned = r.get("planned_date")
                if r.get("requested") and not (name == "admitted" and planned):
                    x["_durations"][bucket].append((r[name] - r["requested"]).total_seconds() / 60)
                if name == "admitted":
                    add(x, "admissions")
                    if planned:
                        add(x, "admissions_planned")
                        if r["admitted"] < midnight(planned + timedelta(days=1), dept):
                            add(x, "admitted_on_time")
                    else:
                        add(x, "admissions_urgent")
                        if r.get("requested"):
                            add(x, "_with_request")
                            if r["admitted"] - r["requested"] <= timedelta(hours=24):
                                add(x, "admitted_within_24h")
                    if (r.get("admitted_place") or r.get("place")) == "EHPAD":
                        add(x, "admissions_in_ehpad")

    for o in offers.values():
        ref = refs.get(o["referral"], {})
        k = key_of(o["department"], ref.get("source"), o["had"])
        if not k:
            continue
        if o.get("made") and in_range(local_day(o["made"], o["department"])):
            add(row(local_day(o["made"], o["department"]), k), "offers_made")
        if o.get("outcome") in ("ACCEPTED", "DECLINED", "EXPIRED") and in_range(local_day(o["outcome_at"], o["department"])):
            x = row(local_day(o["outcome_at"], o["department"]), k)
            add(x, f"offers_{o['outcome'].lower()}")
            if o["outcome"] == "DECLINED":
                add(x, f"declined_{_code(o['reason'])}")
            if o["outcome"] == "ACCEPTED" and o["pending"]:
                add(x, "acceptances_pending_evaluation")
        if o.get("evaluation") and in_range(local_day(o["evaluated_at"], o["department"])):
            x = row(local_day(o["evaluated_at"], o["department"]), k)
            add(x, f"evaluations_{o['evaluation'].lower()}")
            if o.get("outcome") == "ACCEPTED" and o["pending"]:
                x["_durations"]["evaluation"].append((o["evaluated_at"] - o["outcome_at"]).total_seconds() / 60)

    # Each avis a liaison nurse gave after posting, by its period; at HAD level, her HAD's.
    for ev in avis_after_posting:
        k = key_of(ev.department, refs[ev.referral_id].get("source"), ev.fields["had"])
        d = local_day(ev.at, ev.department)
        if k and in_range(d):
            x = row(d, k)
            add(x, "avis_after_posting")
            add(x, f"avis_after_posting_{ev.fields['avis'].lower()}")

    # Stays: day by day, on the clock of the referral's department, up to its today.
    def days(a: date, b: date):
        d = a
        while d <= b:
            yield d
            d += timedelta(days=1)

    span_first = first.replace(day=1) if period == "month" else first
    span_last = last
    if period == "month":
        span_last = (date(last.year + (last.month == 12), last.month % 12 + 1, 1) - timedelta(days=1))

    def today(department: str) -> date:
        return now.astimezone(zones.get(department, PARIS)).date()

    def active_on(r: dict, d: date, department: str) -> bool:
        ad = local_day(r["admitted"], department)
        dd = local_day(r["discharged"], department) if r.get("discharged") else None
        return ad <= d and (dd is None or dd > d)

    stays = [r for r in refs.values() if r.get("admitted")]
    seen: set[tuple] = set()
    for r in stays:
        k = key_of(r["department"], r.get("source"), r.get("admitted_had"))
        if not k:
            continue
        for d in days(span_first, min(span_last, today(r["department"]))):
            if active_on(r, d, r["department"]):
                x = row(d, k)
                add(x, "patient_days")
                p = (label(d.replace(day=1) if period == "month" else d), k, id(r))
                if p not in seen:
                    seen.add(p)
                    add(x, "active_patients")

    # HAD-days, on the clock of the department of the HAD's latest declaration.
    if level != "source":
        declarations: dict[str, list[Ev]] = {}
        for ev in events:
            if ev.kind == "CapacityDeclared":
                declarations.setdefault(ev.fields["had"], []).append(ev)
        for had, decls in declarations.items():
            decls.sort(key=lambda ev: ev.at)
            first_at = decls[0].at
            department = decls[-1].department
            k = key_of(department, None, had)
            for d in days(max(span_first, local_day(first_at, department)), min(span_last, today(department))):
                start, end = midnight(d, department), midnight(d + timedelta(days=1), department)
                x = row(d, k)
                capacity = [ev.fields["authorised"] for ev in decls if ev.at < end][-1]
                # The HAD's latest census declared before the day ends; without one, the platform's patients.
                censuses = [ev.fields["census"] for ev in decls if ev.at < end and ev.fields.get("census") is not None]
                if censuses:
                    active = censuses[-1]
                    add(x, "census_days")
                else:
                    active = sum(1 for r in stays if r.get("admitted_had") == had and active_on(r, d, department))
                add(x, "had_days")
                add(x, "_capacity", capacity)
                add(x, "_occupied", active)
                if active < 50:
                    add(x, "days_below_viability")
                add(x, "_observed", max(0.0, (min(end, now) - max(start, first_at)).total_seconds()))
                stale = 0.0
                for i, ev in enumerate(decls):
                    s = ev.at + stale_after
                    e = decls[i + 1].at if i + 1 < len(decls) else now
                    lo, hi = max(s, start), min(e, end, now)
                    if hi > lo:
                        stale += (hi - lo).total_seconds()
                add(x, "_stale", stale)

    avis = ["avis_given", "avis_favourable", "avis_unfavourable", "avis_admitted", "avis_cancelled", "avis_ineligible"]
    not_at_had = {"referrals_received", *[f"received_{k}" for k in KINDS], "ineligible",
                  *[f"ineligible_{c}" for c in REASONS], "escalations", "conversion_rate", "cancellations",
                  *[f"cancelled_{c}" for c in REASONS], "ed_exits", "ed_stay_median_min", "ed_stay_p90_min",
                  "received_urgent", "received_planned", *avis}
    out = {}
    for (p, k), x in rows.items():
        received = x.get("referrals_received", 0)
        inhabitants = population(level, k)
        final = {
            "conversion_rate": x.get("_cohort", 0) / received if received else None,
            "first_offer_median_min": _pct(x["_durations"]["first_offer"], 0.5),
            "first_offer_p90_min": _pct(x["_durations"]["first_offer"], 0.9),
            "acceptance_median_min": _pct(x["_durations"]["acceptance"], 0.5),
            "acceptance_p90_min": _pct(x["_durations"]["acceptance"], 0.9),
            "admission_median_min": _pct(x["_durations"]["admission"], 0.5),
            "admission_p90_min": _pct(x["_durations"]["admission"], 0.9),
            "ed_stay_median_min": _pct(x["_durations"]["ed_stay"], 0.5),
            "ed_stay_p90_min": _pct(x["_durations"]["ed_stay"], 0.9),
            "evaluation_median_min": _pct(x["_durations"]["evaluation"], 0.5),
            "evaluation_p90_min": _pct(x["_durations"]["evaluation"], 0.9),
            "admitted_within_24h_share": x.get("admitted_within_24h", 0) / x["_with_request"] if x.get("_with_request") else None,
            "admitted_on_time_share": (x.get("admitted_on_time", 0) / x["admissions_planned"]
                                       if x.get("admissions_planned") else None),
            "occupancy": x.get("_occupied", 0) / x["_capacity"] if x.get("_capacity") else None,
            "stale_share": x.get("_stale", 0.0) / x["_observed"] if x.get("_observed") else None,
        }
        for rate, count in (("referrals_received_per_100k", "referrals_received"), ("admissions_per_100k", "admissions"),
                            ("patient_days_per_100k", "patient_days")):
            final[rate] = x.get(count, 0) * 100_000 / inhabitants if inhabitants else None
        for name, value in x.items():
            if not name.startswith("_"):
                final[name] = value
        if level == "had":
            for c in not_at_had:
                final[c] = None
        if level == "source":
            for c in ("had_days", "census_days", "occupancy", "days_below_viability", "stale_share"):
                final[c] = None
        out[(p, k)] = final
    return out


def my_keys(level: str) -> set[str]:
    if level == "department":
        return set(DEPARTMENTS)
    if level == "region":
        return set(DEPARTMENTS.values())
    if level == "source":
        return {s for d in DEPARTMENTS for s, _ in sources(d)}
    return {h for d in DEPARTMENTS for h in hads(d)}


def differences(api_rows: list[dict], expected: dict[tuple[str, str], dict], level: str) -> list[str]:
    """Every disagreement between the service's rows (for our keys) and the oracle's."""
    mine = {(r["period"], r["key"]): r for r in api_rows if r["key"] in my_keys(level)}
    problems = []
    for key in sorted(set(mine) | set(expected)):
        if key not in mine:
            problems.append(f"{level} {key}: missing from the service")
            continue
        if key not in expected:
            problems.append(f"{level} {key}: unexpected row from the service")
            continue
        got, want = mine[key], expected[key]
        for column, value in got.items():
            if column in ("period", "key"):
                continue
            w = want.get(column, None if value is None else 0)
            if w is None or value is None:
                if w != value:
                    problems.append(f"{level} {key} {column}: service {value!r}, oracle {w!r}")
            elif abs(float(value) - float(w)) > 1e-6 * max(1.0, abs(float(w))):
                problems.append(f"{level} {key} {column}: service {value!r}, oracle {w!r}")
    return problems
