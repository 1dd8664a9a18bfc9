"""Kafka entrypoints: referral and matching events become pending deliveries; those and the
capacity events feed the desks' live stream."""

from reflexe_common.topics import CAPACITY_EVENTS, MATCHING_EVENTS, REFERRAL_EVENTS

CONSUMER_GROUP = "notify"
TOPICS = [REFERRAL_EVENTS, MATCHING_EVENTS, CAPACITY_EVENTS]
