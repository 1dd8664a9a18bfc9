"""The referral's API views: whoever may see a referral gets every field of its request's data set
(the desk and the HAD deciding need all of it), an HAD still nothing of another HAD, and nobody a
direct identifier."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta

from reflexe_common.vocabulary import Reason
from reflexe_referral.domain import Referral
from reflexe_referral.entrypoints.schemas import had_referral_view, referral_view, request_view
from tests.unit.referral.conftest import REQUESTED_AT, make_full_request, make_request

X, Y = "340000011", "340000029"


def _leaves(value, path=()):
    """(path, value) of every scalar field of a (nested) dataclass."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _leaves(getattr(value, f.name), (*path, f.name))
    else:
        yield path, value


def _rendered(value):
    if isinstance(value, (frozenset, set)):
        return sorted(str(v) for v in value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, (date,)):
        return value.isoformat()
    if isinstance(value, str):  # StrEnums included
        return str(value)
    return value


def _at(view: dict, path: tuple[str, ...]):
    for key in path:
        assert key in view, f"{'.'.join(path)} is missing from the view"
        view = view[key]
    return view


def test_every_field_of_the_request_is_in_the_view_with_its_value():
    request = make_full_request()
    assert request.validate() == []
    view = request_view(request)
    for path, value in _leaves(request):
        assert _at(view, path) == _rendered(value), ".".join(path)


def test_desks_hospitals_and_admins_get_the_whole_request_and_the_state():
    referral = Referral.from_events(Referral.request(make_full_request(), REQUESTED_AT))
    view = referral_view(referral)
    assert {k: view[k] for k in request_view(referral.request)} == request_view(referral.request)
    assert view["patient"] == {"pseudonym": referral.request.patient.pseudonym, "birth_year": 1937, "sex": "M",
                               "care_commune": "34172", "place_of_care": "EHPAD", "ehpad_finess": "340011113"}
    assert view["clinical"]["planned_date"] == "2025-03-13" and view["clinical"]["karnofsky"] == 30
    assert view["avis"] == {"eligible": True, "reason": None, "text": "Avis favorable de l'IDE de liaison"}
    assert view["status"] == "REQUESTED" and view["closed_reason"] is None and view["accepted_had"] is None
    assert "birth_date" not in json.dumps(view)


def test_an_had_gets_the_whole_request_but_nothing_of_another_had():
    referral = Referral.from_events(Referral.request(make_full_request(), REQUESTED_AT))
    for step in (lambda r: r.record_offer("o1", Y, REQUESTED_AT + timedelta(minutes=30), f"Proposé à HAD Y ({Y}).",
                                          False, REQUESTED_AT + timedelta(minutes=1)),
                 lambda r: r.decline("o1", Y, Reason.NO_CAPACITY, "équipe complète", REQUESTED_AT + timedelta(minutes=2)),
                 lambda r: r.record_offer("o2", X, REQUESTED_AT + timedelta(minutes=40), f"Proposé à HAD X ({X}).",
                                          False, REQUESTED_AT + timedelta(minutes=3)),
                 lambda r: r.accept("o2", X, REQUESTED_AT + timedelta(minutes=4))):
        for event in step(referral):
            referral.apply(event)
    view = had_referral_view(referral, X)
    assert {k: view[k] for k in request_view(referral.request)} == request_view(referral.request)
    assert view["accepted_had"] == X and view["tried_hads"] == [X]
    assert Y not in json.dumps(view), "the HAD that declined is not named"
    assert referral_view(referral)["tried_hads"] == [X, Y], "the desk sees the whole search"


def test_a_closed_referral_tells_why_and_when():
    referral = Referral.from_events(Referral.request(make_request(), REQUESTED_AT))
    for event in referral.cancel(Reason.PATIENT_HOSPITALISED, "", REQUESTED_AT + timedelta(hours=2), actor="desk:34"):
        referral.apply(event)
    view = referral_view(referral)
    assert view["status"] == "CANCELLED" and view["closed_reason"] == "PATIENT_HOSPITALISED"
    assert view["closed_at"] == (REQUESTED_AT + timedelta(hours=2)).isoformat()
    assert view["clocks"] == [] and view["avis"] is None and view["patient"]["ehpad_finess"] is None
