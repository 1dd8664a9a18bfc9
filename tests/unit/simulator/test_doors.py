"""Which door each simulated establishment uses, and the HL7 messages it sends: read by the
gateway's own parser, they name the patient with the very pseudonym the hospital gave its
referral, so the gateway finds it."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import hl7
import pytest

from reflexe_gateway.domain.effects import Effect, SenderKind, effect_of
from reflexe_gateway.domain.hl7 import read_adt
from reflexe_gateway.domain.pseudonym import pseudonymise
from reflexe_gateway.settings import GatewaySettings
from reflexe_simulator.__main__ import main
from reflexe_simulator.adt import Movement, build_message, visit_number
from reflexe_simulator.doors import DoorFractions, Doors, PatientIdDomain, gateway_senders, plan_doors
from reflexe_simulator.scenario import build_scenario
from reflexe_simulator.traffic import PatientRecord, ReferralFactory

KEY = b"the key a hospital shares with the gateway"
AT = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def test_doors_are_shared_out_per_department_deterministically():
    scenario = build_scenario(["34", "31", "48"], seed=3)
    doors = plan_doors(scenario, DoorFractions())
    assert doors == plan_doors(build_scenario(["34", "31", "48"], seed=3), DoorFractions())
    assert doors != plan_doors(build_scenario(["34", "31", "48"], seed=4), DoorFractions())
    for department in scenario.departments.values():
        hospitals, hads = {h.finess for h in department.hospitals}, {h.finess for h in department.hads}
        for chosen, among in ((doors.fhir_hospitals, hospitals), (doors.hl7_hospitals, hospitals),
                              (doors.fhir_hads, hads), (doors.hl7_hads, hads)):
            mine = chosen & among
            assert 1 <= len(mine) < len(among), "some of each department's establishments, not all"
    none = plan_doors(scenario, DoorFractions(0, 0, 0, 0))
    assert none == Doors()
    everyone = plan_doors(scenario, DoorFractions(1, 1, 1, 1))
    assert everyone.fhir_hospitals == everyone.hl7_hospitals == {h.finess for d in scenario.departments.values()
                                                                 for h in d.hospitals}
    with pytest.raises(ValueError):
        DoorFractions(fhir_hads=1.5)


def test_the_gateway_takes_the_allow_list_of_the_senders(capsys, monkeypatch):
    doors = plan_doors(build_scenario(["48", "46"], seed=1), DoorFractions())
    senders = gateway_senders(doors, ["127.0.0.1/32"])
    assert {f for f, s in senders.items() if s["kind"] == "hospital"} == doors.hl7_hospitals
    assert {f for f, s in senders.items() if s["kind"] == "had"} == doors.hl7_hads
    # As the gateway reads it: JSON in its environment.
    for name, value in {"GATEWAY_SENDERS": json.dumps(senders), "GATEWAY_PSEUDONYM_KEY": "k" * 32,
                        "DATABASE_URL": "postgresql://unused", "OIDC_ISSUER": "http://unused"}.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    assert set(settings.senders) == set(senders)
    assert all(settings.senders[f].allows("127.0.0.1") for f in senders)
    # What ./reflexe up and the simulated-day test give the gateway: the same, from the CLI.
    assert main(["--departments", "48,46", "--print-gateway-senders", "--pseudonym-key", "k" * 32]) == 0
    assert json.loads(capsys.readouterr().out) == senders
    # Without the shared key no hospital may send ADT (its messages would match nothing).
    monkeypatch.delenv("GATEWAY_PSEUDONYM_KEY")
    assert main(["--departments", "48,46", "--print-gateway-senders"]) == 0
    assert {s["kind"] for s in json.loads(capsys.readouterr().out).values()} == {"had"}


def _adt_hospital_referral():
    scenario = build_scenario(["34"], seed=5)
    doors = plan_doors(scenario, DoorFractions(hl7_hospitals=1.0))

    def pseudonym_of(source, patient):
        from reflexe_simulator.doors import gateway_pseudonym
        assert doors.sends_adt(source.finess)
        return gateway_pseudonym(KEY, patient.local_id, PatientIdDomain.of(source.finess).oid)

    factory = ReferralFactory(scenario.departments["34"], random.Random(5), pseudonym_of=pseudonym_of)
    return factory.make("ED", AT, AT, 60)


def test_the_gateway_finds_the_referral_of_a_hospital_message_by_its_pseudonym():
    generated = _adt_hospital_referral()
    hospital = generated.source.finess
    for trigger, patient_class, effect in (("A03", "E", Effect.ED_EXIT), ("A06", "I", Effect.HOSPITALISED),
                                           ("A01", "I", Effect.HOSPITALISED)):
        raw = build_message(Movement(trigger, hospital, generated.patient, AT, patient_class, "SAU",
                                     visit_number(hospital, generated.referral_id)))
        message = read_adt(raw)
        assert message.finess == hospital and message.trigger == trigger and message.event_at == AT
        assert message.header.version == "2.5" and "|2.5^FRA^2.11|" in raw
        assert pseudonymise(KEY, message.patient_id, message.patient_authority) == generated.body["patient"]["pseudonym"]
        assert effect_of(message, SenderKind.HOSPITAL) is effect
        assert message.movement_action == "INSERT" and message.movement_id.startswith("MVT")


def test_a_hospital_message_carries_the_hospital_s_own_identity_of_the_patient_which_the_referral_does_not():
    generated = _adt_hospital_referral()
    record = generated.patient
    raw = build_message(Movement("A03", generated.source.finess, record, AT, "E", "SAU", "NDA1"))
    pid = hl7.parse(raw).segment("PID")
    assert str(pid[5]) == f"{record.family_name}^{record.given_name}^^^^^L"
    assert str(pid[7]) == record.birth_date.strftime("%Y%m%d")
    assert record.local_id in str(pid[3]) and record.nir in str(pid[3])
    body = json.dumps(generated.body, ensure_ascii=False)
    for value in (record.family_name, record.nir, record.local_id, record.birth_date.isoformat()):
        assert value not in body


def test_an_had_message_names_the_referral_and_its_own_patient_number():
    generated = _adt_hospital_referral()
    had = "349000018"
    for trigger, effect in (("A01", Effect.HAD_ADMITTED), ("A03", Effect.HAD_DISCHARGED)):
        raw = build_message(Movement(trigger, had, generated.patient, AT, "I", "HAD", visit_number(had, "x"),
                                     referral_id=generated.referral_id))
        message = read_adt(raw)
        assert message.referral_hint == generated.referral_id.replace("-", "")
        assert effect_of(message, SenderKind.HAD) is effect
        assert message.patient_id == PatientIdDomain.of(had).local_id(generated.patient.nir) != generated.patient.local_id


def test_values_with_separators_are_escaped():
    record = PatientRecord("D'ARC|^&~\\", "Jeanne", "244033417200512", datetime(1944, 3, 12).date(), "IPP00000001")
    raw = build_message(Movement("A03", "349100016", record, AT, "E", "SAU", "NDA1"))
    message = hl7.parse(raw)
    assert len(message.segment("PID")) == len(hl7.parse(raw.replace(record.family_name, "DARC")).segment("PID"))
    assert read_adt(raw).trigger == "A03"
