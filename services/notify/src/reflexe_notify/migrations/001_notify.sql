-- Who wants which webhooks, where, signed with which secrets.
CREATE TABLE subscriptions (
    id          uuid PRIMARY KEY,
    recipient   text        NOT NULL,            -- had:<finess> | desk:<department> | hospital:<finess>
    event_types text[]      NOT NULL DEFAULT '{}', -- empty = every type
    url         text        NOT NULL,
    -- the signing secrets, oldest first: one, or two while a rotation is under way
    secrets     text[]      NOT NULL CHECK (cardinality(secrets) BETWEEN 1 AND 2),
    active      boolean     NOT NULL DEFAULT true,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_active_by_recipient ON subscriptions (recipient) WHERE active;

-- One webhook to one subscription. The body is stored as text, byte for byte, so every retry
-- sends (and signs) the very same body under the same webhook-id.
CREATE TABLE deliveries (
    webhook_id      text PRIMARY KEY,            -- msg_<uuid5(event id, subscription id)>
    subscription_id uuid        NOT NULL REFERENCES subscriptions,
    recipient       text        NOT NULL,
    department      text,                        -- whose desk hears of a failure and sees the log
    event_type      text        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts        int         NOT NULL DEFAULT 0,
    attempt_limit   int         NOT NULL,        -- raised by a manual retry of a FAILED delivery
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX deliveries_by_recipient ON deliveries (recipient, created_at DESC);
CREATE INDEX deliveries_by_department ON deliveries (department, created_at DESC);

-- The delivery log: every attempt, its outcome and latency.
CREATE TABLE delivery_attempts (
    id               bigserial PRIMARY KEY,
    webhook_id       text        NOT NULL REFERENCES deliveries,
    attempt          int         NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_seconds double precision NOT NULL,
    http_status      int,
    outcome          text        NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed', 'gone')),
    error            text
);
CREATE INDEX delivery_attempts_by_webhook ON delivery_attempts (webhook_id, id);

-- The source hospital of each referral, learnt from ReferralRequested: later events of the
-- referral do not name it, yet it hears of the offer answers, the admission, the cancellation.
CREATE TABLE referrals (
    referral_id   text PRIMARY KEY,
    department    text NOT NULL,
    source_finess text NOT NULL
);
