"""Deliberately broken variants of the platform, for showing that the chaos checker catches them.
No switch in the production code: a service is started through this launcher, which patches it at
import and then runs the service's own main.

    python -m chaos.broken relay-without-transactions reflexe_referral

relay-without-transactions
    The referral service's outbox relay publishes as a naive relay does: a plain producer (no Kafka
    transaction, no idempotence), one record at a time, and marks the rows published once the batch
    is sent, with no journal of the batch in flight. A relay killed between sending and marking
    publishes those events again when it comes back: the same event id twice on the event log.

matcher-ignoring-holds
    The capacity service's matcher counts an HAD's free places as its last declaration says,
    forgetting the places it has held since: with more referrals than places, it offers a place
    already promised to another patient (`double_booked`).
"""

from __future__ import annotations

import contextlib
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass


def _relay_without_transactions() -> None:
    from reflexe_common import outbox

    class PlainProducer(outbox.AIOKafkaProducer):
        def __init__(self, *args, transactional_id=None, enable_idempotence=True, **kwargs):
            super().__init__(*args, enable_idempotence=False, **kwargs)

        def transaction(self):
            return contextlib.nullcontext()

    async def publish(self, producer, rows, db) -> None:
        for r in rows:
            await producer.send_and_wait(r.topic, r.payload, key=r.key.encode(), headers=r.headers)
        await db.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1)", [r.id for r in rows])

    async def recover(self, db) -> None:  # nothing journaled, nothing to settle
        return None

    outbox.AIOKafkaProducer = PlainProducer
    outbox.OutboxRelay._publish = publish
    outbox.OutboxRelay._recover = recover


def _matcher_ignoring_holds() -> None:
    from reflexe_capacity.domain import capacity

    def declared_places(self) -> int:
        return self.declaration.places_available if self.declaration is not None else 0

    capacity.HadLedger.raw_live_places = declared_places


@dataclass(frozen=True)
class Variant:
    service: str  # the service whose processes run broken
    patch: Callable[[], None]


VARIANTS = {"relay-without-transactions": Variant("referral", _relay_without_transactions),
            "matcher-ignoring-holds": Variant("capacity", _matcher_ignoring_holds)}


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in VARIANTS:
        raise SystemExit(f"usage: python -m chaos.broken {'|'.join(VARIANTS)} MODULE")
    variant, module = argv
    VARIANTS[variant].patch()
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
