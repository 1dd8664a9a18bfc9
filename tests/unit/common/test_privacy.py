"""The direct-identifier detector and the pseudonym format, as tables."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import BaseModel, Field, ValidationError

from reflexe_common.privacy import FreeText, Pseudonym, find_direct_identifier, is_pseudonym

NIR = "a NIR/INS"
DATE = "a full date (a birth date identifies a patient)"


@pytest.mark.parametrize("text, found", [
    # NIR / INS: 13 characters and an optional key, grouped or not; 7/8 for provisional numbers.
    ("1440334172005", NIR),
    ("144033417200542", NIR),
    ("patient 2 44 03 34 172 005 42 vu ce jour", NIR),
    ("NIR 1-44-03-34-172-005", NIR),
    ("INS: 2.52.12.2A.004.123.77", NIR),  # Corsica: 2A in the department's place
    ("7 85 01 99 123 456", NIR),
    ("8850199123456", NIR),
    ("1440 3341 7200 5", NIR),  # any grouping of 13 digits starting like a NIR
    # Full dates, numeric and in words.
    ("née le 12/03/1944", DATE),
    ("DUPONT Jeanne née le 12/03/1944", DATE),
    ("ddn 1-3-1944", DATE),
    ("12-03-1944", DATE),
    ("12.03.1944", DATE),
    ("12/03/44", DATE),
    ("1944-03-12", DATE),
    ("1944/3/12", DATE),
    ("né le 12 mars 1944", DATE),
    ("1er janvier 1950", DATE),
    ("3 févr. 1938", DATE),
    ("12 DECEMBRE 1930", DATE),
    ("March 12, 1944", DATE),
    # Ordinary clinical free text passes.
    ("", None),
    ("refus du patient, revoir dans 48 h", None),
    ("plus de place avant lundi; 3 patients en attente", None),
    ("né en 1944, vit seul au 2e étage", None),
    ("né le 12 mars", None),  # no year: not a full date
    ("appeler le 04 67 33 93 93", None),  # a phone number is 10 digits, not a NIR
    ("RPPS 10001234567", None),  # 11 digits
    ("FINESS 340780477", None),
    ("SAU 3e étage, lit 12", None),
    ("TA 12/8, FC 80", None),
    ("morphine 10 mg/24 h", None),
    ("3440334172005", None),  # 13 digits but no NIR starts with 3
    ("référence 12345678901234567890", None),  # 20 digits: an order number, not a NIR
])
def test_detector(text, found):
    assert find_direct_identifier(text) == found


class Note(BaseModel):
    text: FreeText = Field("", max_length=2000)


def test_free_text_type_refuses_with_the_field_named():
    assert Note(text="patient d'accord").text == "patient d'accord"
    with pytest.raises(ValidationError) as refused:
        Note(text="née le 12/03/1944")
    (error,) = refused.value.errors()
    assert error["loc"] == ("text",) and "full date" in error["msg"]


class Patient(BaseModel):
    pseudonym: Pseudonym


@pytest.mark.parametrize("value, ok", [
    (hashlib.sha256(b"INS 1440334172005").hexdigest(), True),
    ("0" * 64, True),
    ("DUPONT Jeanne née le 12/03/1944", False),
    ("1440334172005", False),
    ("0123456789abcdef" * 2, False),  # 32 hex: a UUID's worth, not a SHA-256
    (hashlib.sha256(b"x").hexdigest().upper(), False),  # one spelling only: lowercase
    (hashlib.sha256(b"x").hexdigest() + "0", False),
    ("g" * 64, False),
])
def test_pseudonym_has_one_format(value, ok):
    assert is_pseudonym(value) is ok
    if ok:
        assert Patient(pseudonym=value).pseudonym == value
    else:
        with pytest.raises(ValidationError) as refused:
            Patient(pseudonym=value)
        assert refused.value.errors()[0]["loc"] == ("pseudonym",)
