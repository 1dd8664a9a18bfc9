"""The HAD registry on the real database: a FINESS with a wrong key, an MPP code outside the
list and a specialised MPP without its mention are refused with a 422 naming the field."""

from __future__ import annotations

import httpx
import pytest

from reflexe_capacity.entrypoints.app import build_app
from reflexe_capacity.settings import CapacitySettings
from tests.support.data import had_body, unique_finess, with_wrong_key
from tests.support.platform import in_process_env
from tests.support.services import serve_in_process, token
from tests.support.territory import own_commune

pytestmark = pytest.mark.integration
ADMIN = token("admin")
COMMUNE = own_commune()


@pytest.fixture(scope="module")
async def capacity(topics):
    settings = CapacitySettings(**in_process_env(topics))
    async with serve_in_process(build_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def test_a_finess_with_a_wrong_key_is_refused_in_the_path_and_in_the_conventions(capacity):
    finess = unique_finess()
    refused = await capacity.put(f"/v1/hads/{with_wrong_key(finess)}", json=had_body("HAD X", [COMMUNE]), headers=ADMIN)
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["path.finess"]
    body = had_body("HAD X", [COMMUNE], ehpad_conventions=[unique_finess(), with_wrong_key(unique_finess())])
    refused = await capacity.put(f"/v1/hads/{finess}", json=body, headers=ADMIN)
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["body.ehpad_conventions.1"]
    assert (await capacity.get(f"/v1/hads/{finess}", headers=token("had", finess=finess))).status_code == 404


@pytest.mark.parametrize(("mentions", "mpp", "field"), [
    ([], ["03", "3"], "body.mpp_supported[1]"),  # "3" for "03" would never match a referral
    ([], ["04", "16"], "body.mpp_supported[1]"),
    ([], ["22", "04"], "body.mpp_supported[0]"),  # the newborn code without the under-3 mention
    (["READAPTATION"], ["11", "19"], "body.mpp_supported[1]"),
])
async def test_registry_mpp_codes_and_their_mentions_are_checked(capacity, mentions, mpp, field):
    finess = unique_finess()
    body = had_body("HAD Y", [COMMUNE], mentions=mentions, mpp_supported=mpp)
    refused = await capacity.put(f"/v1/hads/{finess}", json=body, headers=ADMIN)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "INVALID_AUTHORISATION"
    assert [e["field"] for e in refused.json()["errors"]] == [field]
    fixed = had_body("HAD Y", [COMMUNE], mentions=["SOCLE", "READAPTATION", "ANTE_POST_PARTUM", "ENFANTS_MOINS_3_ANS"],
                     mpp_supported=["03", "04", "11", "19", "22"])
    taken = await capacity.put(f"/v1/hads/{finess}", json=fixed, headers=ADMIN)
    assert taken.status_code == 200, taken.text
    assert taken.json()["mpp_supported"] == ["03", "04", "11", "19", "22"]
