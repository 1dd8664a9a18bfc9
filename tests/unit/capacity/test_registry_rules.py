"""What an HAD's registry entry may claim: real MPP codes, and the mention each specialised one needs."""

from __future__ import annotations

import pytest

from reflexe_capacity.domain.registry import authorisation_problems
from reflexe_common.vocabulary import Mention


def test_codes_of_the_list_with_their_mentions_pass():
    mentions = [Mention.READAPTATION, Mention.ANTE_POST_PARTUM, Mention.ENFANTS_MOINS_3_ANS]
    assert authorisation_problems(mentions, ["03", "04", "11", "12", "19", "21", "22", "25", "29"]) == []
    assert authorisation_problems([], ["01", "14", "24"]) == []  # socle codes need no mention


@pytest.mark.parametrize("code", ["3", "003", "16", "30", "", "ab"])
def test_an_unknown_code_is_named_by_its_index(code):
    [(path, message)] = authorisation_problems([], ["04", code])
    assert path == "mpp_supported[1]" and "unknown MPP code" in message


@pytest.mark.parametrize(("code", "mention"), [("11", Mention.READAPTATION), ("12", Mention.READAPTATION),
                                               ("19", Mention.ANTE_POST_PARTUM), ("21", Mention.ANTE_POST_PARTUM),
                                               ("22", Mention.ENFANTS_MOINS_3_ANS)])
def test_a_specialised_code_needs_its_mention(code, mention):
    [(path, message)] = authorisation_problems([Mention.SOCLE], [code])
    assert path == "mpp_supported[0]" and str(mention) in message
    assert authorisation_problems([mention], [code]) == []
