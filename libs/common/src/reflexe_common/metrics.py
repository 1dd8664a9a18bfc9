"""Operational metrics every service exposes (Prometheus naming: base units, _total, _seconds).

Labels carry topics, consumers, routes and outcomes: never an id of a patient or a referral.
Label sets known in advance are initialised (``init_consumer``) so that a rate or an increase
is 0, not "no data", before the first dead letter.

The catalogue of every Réflexe metric (these and the services' own) is in
deploy/prometheus/README.md; the dashboards and rules in deploy/ query them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily

# No `<name>_created` gauge beside every counter and histogram: it doubles the series for a
# value no dashboard or rule uses (Prometheus derives resets itself).
disable_created_metrics()

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


HANDLER_OUTCOMES = ("handled", "duplicate", "dead-letter")


def init_consumer(consumer: str, group: str, topics: list[str]) -> None:
    """Creates the series of one consumer (a processor fed by a consumer group) at 0."""
    for topic in topics:
        DEAD_LETTERS.labels(consumer, topic)
        CONSUMER_LAG.labels(group, topic)
    for outcome in HANDLER_OUTCOMES:
        HANDLER_SECONDS.labels(consumer, outcome)
    DUPLICATES_SKIPPED.labels(consumer)


class SnapshotGauges:
    """Gauges read from the database rather than kept in memory: a background loop
    (`refresh_periodically`) replaces the whole snapshot every few seconds, the first time
    before the service is ready, so the values are right after a restart, a series whose
    subject is gone (an HAD leaving a department) disappears, and a scrape never waits on
    the database. Registered once per process; the latest snapshot wins."""

    def __init__(self, families: dict[str, tuple[str, tuple[str, ...]]], registry: CollectorRegistry = REGISTRY) -> None:
        self._families = families  # name -> (documentation, label names)
        self._samples: dict[str, list[tuple[tuple[str, ...], float]]] = {name: [] for name in families}
        registry.register(self)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, doc, labels=labels) for name, (doc, labels) in self._families.items()]

    def collect(self) -> list[GaugeMetricFamily]:
        out = []
        for name, (doc, labels) in self._families.items():
            family = GaugeMetricFamily(name, doc, labels=labels)
            for values, value in self._samples.get(name, []):
                family.add_metric(list(values), value)
            out.append(family)
        return out

    def replace(self, samples: dict[str, list[tuple[tuple[str, ...], float]]]) -> None:
        unknown = set(samples) - set(self._families)
        if unknown:
            raise ValueError(f"unknown gauges {sorted(unknown)}")
        self._samples = {name: list(samples.get(name, [])) for name in self._families}


async def refresh_periodically(gauges: SnapshotGauges,
                               compute: Callable[[], Awaitable[dict[str, list[tuple[tuple[str, ...], float]]]]],
                               every: float) -> None:
    """Recomputes a SnapshotGauges forever; a failed refresh keeps the previous snapshot."""
    while True:
        await asyncio.sleep(every)
        try:
            gauges.replace(await compute())
        except asyncio.CancelledError:
            raise
        except Exception:
            logging.getLogger(__name__).exception("gauges not refreshed")
