"""MPP codes coherent with the patient, checked when a referral comes in (docs/domain.md, "Rules
at the door"). The request is dated 10 March 2025 (conftest)."""

from __future__ import annotations

import pytest

from reflexe_common.vocabulary import Sex


def _paths(request) -> list[str]:
    return [path for path, _ in request.validate()]


@pytest.mark.parametrize("code", ["19", "21"])
def test_ante_post_partum_codes_need_a_woman(make_request, code):
    assert _paths(make_request(clinical__main_mpp=code, clinical__associated_mpp=(), patient__sex=Sex.M,
                               patient__birth_year=1995)) == ["clinical.main_mpp"]
    assert _paths(make_request(clinical__main_mpp=code, clinical__associated_mpp=(), patient__sex=Sex.UNKNOWN,
                               patient__birth_year=1995)) == ["clinical.main_mpp"]
    assert _paths(make_request(clinical__associated_mpp=(code,), patient__sex=Sex.M,
                               patient__birth_year=1995)) == ["clinical.associated_mpp[0]"]


@pytest.mark.parametrize(("birth_year", "accepted"), [
    (1941, False),  # 83 or 84
    (1968, False),  # 56 or 57: surely over 55
    (1969, True),  # 55 or 56: may be 55
    (1995, True),
    (2012, True),  # 12 or 13
    (2013, True),  # 11 or 12: may be 12
    (2014, False),  # 10 or 11: surely under 12
])
def test_ante_post_partum_codes_need_a_woman_who_may_be_of_child_bearing_age(make_request, birth_year, accepted):
    request = make_request(clinical__main_mpp="19", clinical__associated_mpp=(), patient__birth_year=birth_year)
    assert _paths(request) == ([] if accepted else ["clinical.main_mpp"])


@pytest.mark.parametrize(("birth_year", "accepted"), [
    (2025, True),  # born this year
    (2023, True),  # 1 or 2
    (2022, True),  # 2 or 3: may still be 2 (year minus birth year would say 3)
    (2021, False),  # 3 or 4
    (1941, False),
])
def test_the_newborn_code_needs_a_child_who_may_be_under_3(make_request, birth_year, accepted):
    request = make_request(clinical__main_mpp="22", clinical__associated_mpp=(), patient__birth_year=birth_year,
                           clinical__palliative=False)
    assert _paths(request) == ([] if accepted else ["clinical.main_mpp"])
    message = dict(request.validate()).get("clinical.main_mpp", "")
    assert accepted or "under 3" in message


@pytest.mark.parametrize(("karnofsky", "accepted"), [(0, True), (50, True), (60, False), (100, False)])
def test_heavy_nursing_implies_a_karnofsky_of_50_or_less(make_request, karnofsky, accepted):
    as_main = make_request(clinical__main_mpp="14", clinical__karnofsky=karnofsky)
    as_associated = make_request(clinical__associated_mpp=("07", "14"), clinical__karnofsky=karnofsky)
    for request in (as_main, as_associated):
        assert _paths(request) == ([] if accepted else ["clinical.karnofsky"])


@pytest.mark.parametrize("code", ["3", "003", "16", "20", "23", " 03"])
def test_an_mpp_code_outside_the_list_is_refused_not_left_unmatched(make_request, code):
    assert _paths(make_request(clinical__main_mpp=code)) == ["clinical.main_mpp"]
    assert _paths(make_request(clinical__associated_mpp=(code,))) == ["clinical.associated_mpp[0]"]


def test_a_wrong_finess_key_is_refused_on_the_source_and_the_ehpad(make_request):
    from reflexe_common.vocabulary import PlaceOfCare

    assert _paths(make_request(source__finess="340780478")) == ["source.finess"]
    assert _paths(make_request(patient__place_of_care=PlaceOfCare.EHPAD, patient__ehpad_finess="340111112")) == [
        "patient.ehpad_finess"]
