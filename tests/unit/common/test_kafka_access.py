"""The Kafka client options, the ACL declaration and the sender check, without a broker (the
same rules on the real broker: tests/integration/test_kafka_security.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from reflexe.v1 import capacity_pb2, matching_pb2, submission_pb2

from reflexe_common.envelope import PoisonRecord, wrap
from reflexe_common.kafka import KafkaAccess, kafka_access, password_variable
from reflexe_common.kafka_acls import SERVICES, service_acls, system_acls
from reflexe_common.settings import ServiceSettings
from reflexe_common.topics import (
    ALL_TOPICS,
    CAPACITY_EVENTS,
    INBOUND_CAPACITY,
    INBOUND_REFERRALS,
    MATCHING_EVENTS,
    REFERRAL_EVENTS,
    SENDER_MISMATCH,
)


@dataclass
class _Record:
    topic: str


def _settings(**env: str) -> ServiceSettings:
    return ServiceSettings(OIDC_ISSUER="https://issuer.example", **env)


def test_a_service_is_its_own_principal_with_its_own_password(monkeypatch) -> None:
    monkeypatch.setenv(password_variable("referral"), "referral-secret")
    monkeypatch.setenv(password_variable("notify"), "notify-secret")
    options = kafka_access(_settings(KAFKA_BOOTSTRAP="k:9092"), "referral").options()
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "SASL_PLAINTEXT",
                       "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "referral",
                       "sasl_plain_password": "referral-secret"}


def test_explicit_credentials_win_and_sasl_without_a_password_refuses_to_start(monkeypatch) -> None:
    monkeypatch.delenv(password_variable("capacity"), raising=False)
    explicit = kafka_access(_settings(KAFKA_USERNAME="capacity-eu", KAFKA_PASSWORD="p"), "capacity")
    assert (explicit.username, explicit.password) == ("capacity-eu", "p")
    with pytest.raises(ValueError, match="needs a username and a password"):
        kafka_access(_settings(), "capacity")
    plaintext = kafka_access(_settings(KAFKA_SECURITY_PROTOCOL="PLAINTEXT"), "capacity").options()
    assert "sasl_plain_password" not in plaintext


def test_faust_gets_scram_credentials() -> None:
    options = KafkaAccess("a:1,b:2", "SASL_PLAINTEXT", "SCRAM-SHA-512", "capacity", "p").faust_options()
    assert options["broker"] == ["kafka://a:1", "kafka://b:2"]
    credentials = options["broker_credentials"]
    assert (credentials.username, credentials.password, credentials.mechanism.value) == ("capacity", "p", "SCRAM-SHA-512")


def _writes(acls) -> set[str]:
    return {a.resource_name for a in acls if a.resource_type == "TOPIC" and a.operation == "WRITE"}


def test_each_service_writes_only_its_own_events_and_the_dead_letters() -> None:
    assert _writes(service_acls("referral")) == {REFERRAL_EVENTS.name, "reflexe.deadletter.v1"}
    assert _writes(service_acls("capacity")) == {MATCHING_EVENTS.name, CAPACITY_EVENTS.name, "reflexe.deadletter.v1"}
    assert _writes(service_acls("indicators")) == _writes(service_acls("notify")) == {"reflexe.deadletter.v1"}
    for service in SERVICES:
        acls = service_acls(service)
        assert all(a.principal == service for a in acls)
        creatable = {a.resource_name for a in acls if a.operation == "CREATE"}
        assert creatable == {t.name for t in ALL_TOPICS}  # ensure_topics, by name: no inbound topic
        assert not any(a.pattern == "PREFIXED" and a.resource_name == "reflexe." for a in acls)


def test_a_system_may_only_write_its_own_inbound_topic() -> None:
    acls = system_acls("340000017", "hospital")
    assert {(a.principal, a.resource_name, a.operation, a.pattern) for a in acls} == {
        ("system-340000017", "reflexe.inbound.referrals.v1.340000017", "WRITE", "LITERAL"),
        ("system-340000017", "reflexe.inbound.referrals.v1.340000017", "DESCRIBE", "LITERAL"),
    }
    with pytest.raises(ValueError):
        system_acls("34000000*", "hospital")  # no wildcard can sneak into a topic name


def test_the_sender_is_the_topics_and_a_claim_for_another_is_a_sender_mismatch() -> None:
    own = wrap(submission_pb2.SubmitReferral(submitted_by="340000017"), "test")
    INBOUND_REFERRALS.verify_sender(_Record(INBOUND_REFERRALS.topic("340000017").name), own)
    with pytest.raises(PoisonRecord, match=f"^{SENDER_MISMATCH}"):
        INBOUND_REFERRALS.verify_sender(_Record(INBOUND_REFERRALS.topic("340000025").name), own)
    declaration = wrap(capacity_pb2.DeclareCapacity(had_finess="2A0000014"), "test")
    INBOUND_CAPACITY.verify_sender(_Record(INBOUND_CAPACITY.topic("2A0000014").name), declaration)
    with pytest.raises(PoisonRecord, match=f"^{SENDER_MISMATCH}"):
        INBOUND_CAPACITY.verify_sender(_Record(INBOUND_CAPACITY.topic("2B0000012").name), declaration)
    # Another kind's topic is no sender of this kind.
    with pytest.raises(PoisonRecord, match=f"^{SENDER_MISMATCH}"):
        INBOUND_CAPACITY.verify_sender(_Record(INBOUND_REFERRALS.topic("2A0000014").name), declaration)
    # A message without the claim is left to the handler, which refuses it with its own reason.
    INBOUND_REFERRALS.verify_sender(_Record(INBOUND_REFERRALS.topic("340000017").name),
                                    wrap(matching_pb2.MatchExhausted(), "test"))


def test_the_consumers_pattern_matches_exactly_the_inbound_topics_of_its_kind() -> None:
    import re

    pattern = re.compile(INBOUND_REFERRALS.pattern)
    assert pattern.match(INBOUND_REFERRALS.topic("2B1345671").name)
    for other in (INBOUND_CAPACITY.topic("340000017").name, REFERRAL_EVENTS.name,
                  INBOUND_REFERRALS.prefix + "3400000011", INBOUND_REFERRALS.prefix + "34000000"):
        assert not pattern.match(other), other


def test_metric_labels_count_every_senders_inbound_topic_of_a_kind_as_one() -> None:
    from reflexe_common.topics import INBOUND_CAPACITY, INBOUND_REFERRALS, REFERRAL_EVENTS, topic_label

    assert topic_label(INBOUND_REFERRALS.topic("340780477").name) == "reflexe.inbound.referrals.v1.*"
    assert topic_label(INBOUND_REFERRALS.topic("310781406").name) == "reflexe.inbound.referrals.v1.*"
    assert topic_label(INBOUND_CAPACITY.topic("340780477").name) == "reflexe.inbound.capacity.v1.*"
    assert topic_label(REFERRAL_EVENTS.name) == REFERRAL_EVENTS.name
