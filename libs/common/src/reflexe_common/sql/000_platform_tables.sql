-- Tables every service keeps in its own schema: the transactional outbox, the relay's batch
-- journal (exactly-once publication across crashes) and the idempotent consumer's inbox.
CREATE TABLE IF NOT EXISTS outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    topic        text        NOT NULL,
    key          text        NOT NULL,
    headers      jsonb       NOT NULL,
    payload      bytea       NOT NULL,
    -- clock_timestamp, not now(): the time of the insert, not of its transaction's start, so
    -- the publication delay measured from it is true for events of long batch transactions.
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE IF NOT EXISTS outbox_batches (
    batch_id   uuid PRIMARY KEY,
    outbox_ids bigint[]    NOT NULL,
    -- where the first record of the batch landed: enough to tell after a crash whether the
    -- Kafka transaction committed (all records of a transaction are visible or none is).
    probe_topic     text   NOT NULL,
    probe_partition int    NOT NULL,
    probe_offset    bigint NOT NULL,
    state      text        NOT NULL CHECK (state IN ('SENDING', 'DONE', 'ABORTED')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_batches_sending ON outbox_batches (created_at) WHERE state = 'SENDING';

CREATE TABLE IF NOT EXISTS inbox (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Wakes the outbox relay when an event is committed (LISTEN outbox_<schema>), without a round
-- trip of its own per event.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
