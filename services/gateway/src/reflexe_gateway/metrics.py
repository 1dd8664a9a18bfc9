"""The gateway's metrics. Labels: ACK codes, triggers, outcomes; never a patient or a sender id."""

from prometheus_client import Counter, Gauge

ACKS = Counter("reflexe_gateway_acks_total", "HL7 acknowledgements sent, by MSA-1 code.", ["code"])
RECORDED = Counter("reflexe_gateway_messages_recorded_total", "ADT messages recorded (AA), by trigger event.",
                   ["trigger"])
DUPLICATES = Counter("reflexe_gateway_duplicates_total", "Messages received again (same sender and MSH-10).")
OUTCOMES = Counter("reflexe_gateway_outcomes_total", "Recorded messages by outcome once carried out.", ["outcome"])
UNMATCHED = Gauge("reflexe_gateway_unmatched_messages", "Messages about a patient with no open referral, kept.")
APPLY_FAILURES = Counter("reflexe_gateway_apply_failures_total",
                         "Attempts to carry out an effect that failed and will be retried.")

for code in ("AA", "AE", "AR"):
    ACKS.labels(code)
