-- One row per referral: the current state, kept in step with its event log (the source of truth).
CREATE TABLE referrals (
    referral_id   uuid PRIMARY KEY,
    department    text        NOT NULL,
    source_finess text        NOT NULL,
    request_hash  text        NOT NULL,  -- idempotency: same id + same body = same referral
    status        text        NOT NULL,
    version       int         NOT NULL,
    requested_at  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX referrals_open_by_department ON referrals (department, requested_at)
    WHERE status NOT IN ('INELIGIBLE', 'CANCELLED', 'DISCHARGED', 'ADMITTED');

-- The event log: each event stored as its reflexe.v1 protobuf message.
CREATE TABLE referral_events (
    referral_id uuid        NOT NULL REFERENCES referrals,
    seq         int         NOT NULL,
    event_id    uuid        NOT NULL UNIQUE,
    type        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    actor       text,
    payload     bytea       NOT NULL,
    PRIMARY KEY (referral_id, seq)
);

-- Durable clocks: they fire after a restart too.
CREATE TABLE clocks (
    referral_id uuid        NOT NULL REFERENCES referrals,
    kind        text        NOT NULL,
    offer_id    text        NOT NULL DEFAULT '',
    due_at      timestamptz NOT NULL,
    PRIMARY KEY (referral_id, kind, offer_id)
);
CREATE INDEX clocks_due ON clocks (due_at);

-- Who did what, for desk and HAD commands (accepted or refused).
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    referral_id uuid,
    outcome     text        NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}'
);
