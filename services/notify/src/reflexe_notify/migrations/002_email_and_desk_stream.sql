-- E-mail subscriptions beside webhooks: same deliveries, retries and log. An e-mail
-- subscription keeps its address in url as 'mailto:<address>' and has no signing secret.
ALTER TABLE subscriptions ADD COLUMN channel text NOT NULL DEFAULT 'webhook' CHECK (channel IN ('webhook', 'email'));
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_secrets_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_secrets_check
    CHECK (cardinality(secrets) BETWEEN 1 AND 2 OR (channel = 'email' AND cardinality(secrets) = 0));

-- The desks' live stream. Every event a desk watches, numbered per department in the
-- consumer's transaction. The number comes from a per-department counter row: its lock makes
-- transactions of one department commit in number order, so a reader that has seen n and reads
-- "seq > n" never misses a row committed later with a smaller number (Last-Event-ID resumption).
CREATE TABLE desk_stream_heads (
    department text PRIMARY KEY,
    last_seq   bigint NOT NULL
);

CREATE TABLE desk_events (
    department  text        NOT NULL,
    seq         bigint      NOT NULL,
    origin      text        NOT NULL,            -- the Kafka event id (or the failed delivery) it tells
    type        text        NOT NULL,            -- e.g. referral.requested, capacity.changed, delivery.failed
    alert       boolean     NOT NULL DEFAULT false,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    payload     text        NOT NULL,            -- the JSON the stream sends, byte for byte
    PRIMARY KEY (department, seq),
    UNIQUE (department, origin)
);
CREATE INDEX desk_events_alerts ON desk_events (department, seq DESC) WHERE alert;
CREATE INDEX desk_events_recorded ON desk_events (recorded_at);
