"""Kafka entrypoints: referral and matching events become pending deliveries."""

from reflexe_common.topics import MATCHING_EVENTS, REFERRAL_EVENTS

CONSUMER_GROUP = "notify"
TOPICS = [REFERRAL_EVENTS, MATCHING_EVENTS]
