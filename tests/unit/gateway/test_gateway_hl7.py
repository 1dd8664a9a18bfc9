"""Reading IHE PAM FR ADT messages, pseudonymising PID-3, building ACKs, deciding effects."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import hl7
import pytest

from reflexe_common.privacy import is_pseudonym
from reflexe_gateway.domain.ack import build_ack
from reflexe_gateway.domain.effects import Effect, SenderKind, effect_of
from reflexe_gateway.domain.hl7 import Rejection, read_adt, read_header
from reflexe_gateway.domain.pseudonym import pseudonymise
from tests.unit.gateway.hl7_samples import AUTHORITY_OID, BIRTH_DATE, NIR, SURNAME, adt

FINESS = "340780477"


def test_an_a03_reads_the_local_identifier_time_and_movement():
    message = read_adt(adt("A03", FINESS, "8812345", control_id="C42", movement_id="MVT77", event_time="20261126092900"))
    assert (message.finess, message.trigger, message.header.control_id) == (FINESS, "A03", "C42")
    assert (message.patient_id, message.patient_authority) == ("8812345", AUTHORITY_OID)
    assert message.movement_id == "MVT77" and message.movement_action == "INSERT"
    # 09:29 in Paris in November (UTC+1), sent without offset as IHE PAM FR does.
    assert message.event_at == datetime(2026, 11, 26, 8, 29, tzinfo=UTC)
    assert message.header.version == "2.5" and not message.death


def test_the_pi_identifier_is_picked_whatever_its_place_in_pid_3():
    raw = adt("A01", FINESS, "777").replace(
        f"777^^^CHU-MTP&{AUTHORITY_OID}&ISO^PI~{NIR}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS",
        f"{NIR}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS~777^^^CHU-MTP^PI")
    message = read_adt(raw)
    assert (message.patient_id, message.patient_authority) == ("777", "CHU-MTP")


def test_a_pid_3_without_a_pi_identifier_is_an_ae_naming_pid_3():
    raw = adt("A01", FINESS, "777").replace(f"777^^^CHU-MTP&{AUTHORITY_OID}&ISO^PI~", "")
    with pytest.raises(Rejection) as refused:
        read_adt(raw)
    assert (refused.value.ack, refused.value.location, refused.value.code) == ("AE", "PID^1^3", "101")


@pytest.mark.parametrize("raw, location", [
    ("garbage", "MSH^1"),
    ("MSH|^~\\&|A|340780477|B|C|20261126||ORU^R01|X1|P|2.5", "MSH^1^9"),
    ("MSH|^~\\&|A|340780477|B|C|20261126||ADT^A01|X1|P|2.3", "MSH^1^12"),
    ("MSH|^~\\&|A|340780477|B|C|20261126||ADT^A01||P|2.5", "MSH^1^10"),
    ("MSH|^~\\&|A|CHU-MTP|B|C|20261126||ADT^A01|X1|P|2.5", "MSH^1^4"),
    ("MSH|^~\\&|A|340780478|B|C|20261126||ADT^A01|X1|P|2.5", "MSH^1^4"),  # the FINESS key is wrong
])
def test_what_is_not_an_adt_2_5_from_a_finess_is_rejected_ar(raw, location):
    with pytest.raises(Rejection) as refused:
        read_adt(raw)
    assert refused.value.ack == "AR" and refused.value.location == location


def test_a_bad_event_time_is_an_ae_naming_the_field():
    with pytest.raises(Rejection) as refused:
        read_adt(adt("A03", FINESS, "1", event_time="2026-11-26"))
    assert refused.value.ack == "AE" and refused.value.location == "ZBE^1^2"


def test_death_is_read_from_pv1_36_or_pid_30():
    assert read_adt(adt("A03", FINESS, "1", disposition="9")).death
    assert read_adt(adt("A03", FINESS, "1", death="Y")).death
    assert not read_adt(adt("A03", FINESS, "1", disposition="1")).death


def test_an_had_names_the_referral_in_pv1_5():
    referral_id = "0b8f5a57-3a55-4b8e-9d3e-6f0a2b1c9d11"
    assert read_adt(adt("A01", FINESS, "1", preadmit=referral_id)).referral_hint == referral_id.replace("-", "")
    assert read_adt(adt("A01", FINESS, "1", preadmit="V123")).referral_hint is None


def test_the_pseudonym_is_an_hmac_of_authority_and_identifier_in_the_platform_format():
    key = b"k" * 32
    value = pseudonymise(key, "8812345", AUTHORITY_OID)
    assert is_pseudonym(value)
    assert value == hmac.new(key, f"{AUTHORITY_OID}|8812345".encode(), hashlib.sha256).hexdigest()
    assert value != pseudonymise(b"x" * 32, "8812345", AUTHORITY_OID)  # keyed
    assert value != pseudonymise(key, "8812345", "another-hospital")  # same number elsewhere: another patient
    with pytest.raises(ValueError):
        pseudonymise(b"", "1", "a")


def test_an_ack_parses_and_names_the_error_field():
    header = read_header(adt("A01", FINESS, "1", control_id="C9"))
    text = build_ack(header, "AE", "ACK1", datetime(2026, 11, 26, 9, 0, tzinfo=UTC), ("101", "PID^1^3", "no PI"))
    ack = hl7.parse(text)
    assert str(ack.segment("MSA")[1]) == "AE" and str(ack.segment("MSA")[2]) == "C9"
    assert str(ack.segment("MSH")[9]) == "ACK^A01^ACK" and str(ack.segment("MSH")[10]) == "ACK1"
    assert str(ack.segment("MSH")[5]) == "SIH_CHU" and str(ack.segment("MSH")[6]) == f"{FINESS}^^FINESS".split("^")[0]
    err = ack.segment("ERR")
    assert str(err[2]) == "PID^1^3" and str(err[3]).startswith("101^") and str(err[4]) == "E"


def test_an_ack_to_garbage_is_well_formed():
    ack = hl7.parse(build_ack(None, "AR", "ACK2", datetime(2026, 11, 26, tzinfo=UTC), ("100", "MSH^1", "x|y^z")))
    assert str(ack.segment("MSA")[1]) == "AR" and str(ack.segment("MSA")[2]) == ""
    assert str(ack.segment("ERR")[8]) == "xyz"


@pytest.mark.parametrize("trigger, sender, options, effect", [
    ("A03", SenderKind.HOSPITAL, {}, Effect.ED_EXIT),
    ("A03", SenderKind.HOSPITAL, {"disposition": "9"}, Effect.DECEASED),
    ("A01", SenderKind.HOSPITAL, {"patient_class": "I"}, Effect.HOSPITALISED),
    ("A01", SenderKind.HOSPITAL, {"patient_class": "E"}, Effect.NONE),
    ("A06", SenderKind.HOSPITAL, {"patient_class": "I"}, Effect.HOSPITALISED),
    ("A02", SenderKind.HOSPITAL, {}, Effect.NONE),
    ("A11", SenderKind.HOSPITAL, {"action": "CANCEL"}, Effect.UNDO),
    ("A13", SenderKind.HOSPITAL, {}, Effect.UNDO),
    ("A01", SenderKind.HAD, {"patient_class": "I"}, Effect.HAD_ADMITTED),
    ("A03", SenderKind.HAD, {}, Effect.HAD_DISCHARGED),
    ("A02", SenderKind.HAD, {}, Effect.NONE),
])
def test_effects(trigger, sender, options, effect):
    assert effect_of(read_adt(adt(trigger, FINESS, "1", **options)), sender) is effect


def test_nothing_read_carries_a_name_nir_or_birth_date_but_the_identifier_to_hash():
    message = read_adt(adt("A01", FINESS, "8812345", patient_class="I"))
    text = repr(message)
    for secret in (SURNAME, NIR, BIRTH_DATE, "TILLEULS"):
        assert secret not in text
