"""A webhook recipient names an establishment by a FINESS with a valid check key."""

from __future__ import annotations

import pytest

from reflexe_notify.domain.recipients import Recipient, RecipientKind


def test_recipients_parse():
    assert Recipient.parse("had:340780477") == Recipient(RecipientKind.HAD, "340780477")
    assert Recipient.parse("hospital:2A0000014").scope == "2A0000014"
    assert Recipient.parse("desk:2B").scope == "2B"


@pytest.mark.parametrize("text", ["had:340780478", "hospital:34078047", "had:3A0780477", "desk:340780477"])
def test_a_recipient_with_a_wrong_finess_or_scope_is_refused(text):
    with pytest.raises(ValueError, match="invalid"):
        Recipient.parse(text)
