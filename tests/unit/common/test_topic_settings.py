"""How many copies of each topic the platform creates follows the cluster it runs on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reflexe_common.topics import TopicSettings


def test_one_copy_by_default_for_the_one_node_development_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_TOPIC_REPLICATION_FACTOR", raising=False)
    monkeypatch.delenv("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", raising=False)
    settings = TopicSettings()
    assert (settings.replication_factor, settings.min_insync_replicas) == (1, 1)


def test_three_copies_two_in_sync_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", "2")
    settings = TopicSettings()
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)


def test_more_in_sync_replicas_than_copies_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION_FACTOR", "1")
    monkeypatch.setenv("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", "2")
    with pytest.raises(ValidationError, match="KAFKA_TOPIC_MIN_INSYNC_REPLICAS"):
        TopicSettings()


def test_zero_copies_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION_FACTOR", "0")
    with pytest.raises(ValidationError, match="KAFKA_TOPIC_REPLICATION_FACTOR"):
        TopicSettings()
