"""The privacy scan must find a leaked identity, and must not take a number that merely contains
a birth date's digits (a duration, a timestamp) for one."""

from tests.support.privacy_scan import Findings, PrivacyScan

SCAN = PrivacyScan(("06051939", "DUPONT Jeanne", "1850578006084"))


def _found(text: str) -> list[str]:
    findings = Findings()
    SCAN.check("unit:text", text, findings)
    return findings.found


def test_a_birth_date_inside_a_longer_digit_run_is_not_a_leak() -> None:
    assert _found("duration 0.060519391001435 s") == []
    assert _found("id 106051939") == []
    assert _found("duration 0.06051939") == []


def test_a_birth_date_or_nir_standing_alone_is_a_leak() -> None:
    assert _found("born 06051939.") != []
    assert _found("nir=1850578006084") != []


def test_a_name_is_found_anywhere() -> None:
    assert _found("patientDUPONT Jeanne") != []


def test_a_nir_with_a_valid_key_is_found_without_a_canary() -> None:
    digits = "2840573482019"  # not a canary: found by its shape and key alone
    key = 97 - int(digits) % 97
    assert _found(f"x {digits}{key:02d} y") != []
    assert _found(f"x {digits}{(key + 1) % 97:02d} y") == []
    assert _found(f"took 0.{digits}{key:02d} s") == [], "the decimals of a duration are not a NIR"
