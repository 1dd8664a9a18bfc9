"""The simulated hospitals keep their patients' identities and send only a keyed pseudonym."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from reflexe_common.privacy import find_direct_identifier, is_pseudonym
from reflexe_simulator.scenario import build_scenario
from reflexe_simulator.traffic import PatientRecord, ReferralFactory


def test_a_patient_record_has_a_valid_nir_and_a_pseudonym_of_the_platform_format() -> None:
    record = PatientRecord.draw(random.Random(1), "F", 1941, "34")
    assert record.nir[0] == "2" and record.nir[1:3] == "41" and record.nir[5:7] == "34"
    assert int(record.nir[13:]) == 97 - int(record.nir[:13]) % 97
    assert find_direct_identifier(record.nir) == "a NIR/INS", "the scan's canaries must be what the detector finds"
    assert is_pseudonym(record.pseudonym(b"key-a"))
    assert record.pseudonym(b"key-a") != record.pseudonym(b"key-b"), "each hospital keys its own pseudonyms"


def test_referral_bodies_carry_none_of_the_hospitals_patient_record() -> None:
    kept: list[PatientRecord] = []
    factory = ReferralFactory(build_scenario(["34"], seed=4).departments["34"], random.Random(4), kept.append)
    now = datetime(2026, 11, 26, 9, tzinfo=UTC)
    for _ in range(50):
        generated = factory.make("ED", now, now, 60)
        text = json.dumps(generated.body, ensure_ascii=False)
        record = generated.patient
        assert record is kept[-1]
        for value in (record.family_name, record.given_name, record.nir, record.birth_date.isoformat(),
                      record.birth_date.strftime("%d/%m/%Y")):
            assert value not in text
        assert generated.body["patient"]["birth_year"] == record.birth_date.year
    assert len(kept) == 50
