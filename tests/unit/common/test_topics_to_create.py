"""Which topics a starting service creates, and when it refuses to start instead: in production
(REFLEXE_KAFKA_CREATE_TOPICS=false) a missing topic stops it with the names, never creates it."""

from __future__ import annotations

import pytest
from aiokafka.errors import NodeNotReadyError, TopicAuthorizationFailedError

from reflexe_common.settings import ServiceSettings
from reflexe_common.topics import (ALL_TOPICS, DEAD_LETTERS, REFERRAL_EVENTS, MissingTopics, describe_topics,
                                   topics_to_create)

ALL_THERE = {t.name: t.partitions for t in ALL_TOPICS}


def test_locally_the_missing_topics_are_created() -> None:
    counts = {name: n for name, n in ALL_THERE.items() if name != DEAD_LETTERS.name}
    assert topics_to_create(ALL_TOPICS, counts, create=True) == [DEAD_LETTERS]
    assert topics_to_create(ALL_TOPICS, ALL_THERE, create=True) == []


def test_in_production_a_missing_topic_stops_the_service_and_names_it() -> None:
    counts = {name: n for name, n in ALL_THERE.items() if name != REFERRAL_EVENTS.name}
    with pytest.raises(MissingTopics, match=REFERRAL_EVENTS.name.replace(".", r"\.")) as raised:
        topics_to_create(ALL_TOPICS, counts, create=False)
    assert raised.value.names == [REFERRAL_EVENTS.name]
    assert "REFLEXE_KAFKA_CREATE_TOPICS=false" in str(raised.value)
    assert topics_to_create(ALL_TOPICS, ALL_THERE, create=False) == []


@pytest.mark.parametrize("create", [True, False])
def test_a_topic_with_another_partition_count_stops_the_service(create: bool) -> None:
    counts = {**ALL_THERE, REFERRAL_EVENTS.name: REFERRAL_EVENTS.partitions + 1}
    with pytest.raises(RuntimeError, match="partitions"):
        topics_to_create(ALL_TOPICS, counts, create=create)


def test_the_settings_create_and_migrate_by_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OIDC_ISSUER", "https://idp.example.invalid/realms/r")
    settings = ServiceSettings()
    assert settings.kafka_create_topics is True and settings.migrate_at_start is True
    monkeypatch.setenv("REFLEXE_KAFKA_CREATE_TOPICS", "false")
    monkeypatch.setenv("REFLEXE_MIGRATE_AT_START", "false")
    settings = ServiceSettings()
    assert settings.kafka_create_topics is False and settings.migrate_at_start is False


class _AdminWithADeadNode:
    """Answers after `failures` retriable errors (a node that just died), or raises `error` for good."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def describe_topics(self, names):
        self.calls += 1
        if self.error is not None:
            raise self.error
        if self.calls <= self.failures:
            raise NodeNotReadyError("node 3")
        return [{"topic": n, "partitions": [], "error_code": 0} for n in names]


async def test_a_dead_node_asked_for_the_topics_is_asked_again_and_a_real_error_is_not():
    admin = _AdminWithADeadNode(failures=2)
    assert await describe_topics(admin, ["t"]) == [{"topic": "t", "partitions": [], "error_code": 0}]
    assert admin.calls == 3
    refused = _AdminWithADeadNode(failures=0, error=TopicAuthorizationFailedError("t"))
    with pytest.raises(TopicAuthorizationFailedError):
        await describe_topics(refused, ["t"])
    assert refused.calls == 1
