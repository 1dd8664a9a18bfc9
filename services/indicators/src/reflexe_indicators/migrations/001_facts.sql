-- Facts folded from the event log, one row per referral and per offer, with event times:
-- every indicator is a query over them by period and level, so late and out-of-order events
-- land in the period they belong to, and percentiles are exact.
CREATE TABLE referral_facts (
    referral_id     uuid PRIMARY KEY,
    department      text,
    source_kind     text,
    source_finess   text,
    place_of_care   text,
    requested_at    timestamptz,
    ineligible_at   timestamptz,
    ineligible_reason text,
    first_offer_at  timestamptz,
    accepted_at     timestamptz,
    accepted_had    text,
    escalated_at    timestamptz,
    admitted_at     timestamptz,
    admitted_had    text,
    discharged_at   timestamptz,
    cancelled_at    timestamptz,
    cancel_reason   text
);
CREATE INDEX referral_facts_requested ON referral_facts (requested_at);
CREATE INDEX referral_facts_admitted ON referral_facts (admitted_at);

CREATE TABLE offer_facts (
    offer_id    text PRIMARY KEY,
    referral_id uuid        NOT NULL,
    department  text        NOT NULL,
    had_finess  text        NOT NULL,
    made_at     timestamptz NOT NULL,
    by_desk     boolean     NOT NULL DEFAULT false,
    outcome     text,        -- ACCEPTED, DECLINED, EXPIRED, WITHDRAWN
    outcome_at  timestamptz,
    reason      text
);
CREATE INDEX offer_facts_made ON offer_facts (made_at);
