"""Webhook metrics. No label carries an id (of a delivery, a subscription or a recipient)."""

from prometheus_client import Counter, Gauge, Histogram

DELIVERY_ATTEMPTS = Counter(
    "reflexe_webhook_deliveries_total", "Webhook delivery attempts by outcome (delivered, retry, failed, gone).",
    ["outcome"],
)
DELIVERY_SECONDS = Histogram(
    "reflexe_webhook_delivery_duration_seconds", "Duration of one webhook HTTP attempt.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PENDING = Gauge("reflexe_webhook_pending_deliveries", "Deliveries waiting for their first attempt or a retry.")

for _outcome in ("delivered", "retry", "failed", "gone"):
    DELIVERY_ATTEMPTS.labels(_outcome)  # every outcome at 0 from the start: rates are 0, not "no data"
