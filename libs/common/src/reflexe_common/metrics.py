"""Operational metrics every service exposes (Prometheus naming: base units, _total, _seconds).

Labels carry topics, consumers, routes and outcomes: never an id of a patient or a referral.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HANDLER_SECONDS = Histogram(
    "reflexe_handler_duration_seconds",
    "Time to process one Kafka record, decode to commit.",
    ["consumer", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEAD_LETTERS = Counter(
    "reflexe_dead_letters_total", "Records sent to the dead-letter topic.", ["consumer", "topic"]
)
DUPLICATES_SKIPPED = Counter(
    "reflexe_duplicate_events_total", "Redelivered events skipped by the idempotent consumer.", ["consumer"]
)
CONSUMER_LAG = Gauge(
    "reflexe_consumer_lag_records", "Records behind the end of the log, per consumer group and topic.", ["group", "topic"]
)
OUTBOX_BACKLOG = Gauge("reflexe_outbox_backlog_events", "Outbox events not yet published.", ["service"])
OUTBOX_PUBLISHED = Counter("reflexe_outbox_published_total", "Outbox events published to Kafka.", ["service"])
OUTBOX_PUBLISH_SECONDS = Histogram(
    "reflexe_outbox_publish_duration_seconds",
    "Time from an event's commit in the outbox to its publication on Kafka.",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_SECONDS = Histogram(
    "reflexe_http_request_duration_seconds",
    "HTTP request latency by route template and status class.",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
