-- Every ADT message the gateway acknowledged with AA, recorded before the ACK is sent.
-- Never the raw message: the pseudonym, the event, its times, the sender and the control id.
CREATE TABLE messages (
    id             bigserial   PRIMARY KEY,
    sender_finess  text        NOT NULL,
    control_id     text        NOT NULL,  -- MSH-10, unique per sender: a resent message is a duplicate
    ack_control_id text        NOT NULL,  -- our ACK's MSH-10, given again to a duplicate
    trigger        text        NOT NULL,  -- A01, A03, A11...
    effect         text        NOT NULL,  -- what it means for a referral (domain/effects.py)
    pseudonym      text        NOT NULL CHECK (pseudonym ~ '^[0-9a-f]{64}$'),
    event_at       timestamptz NOT NULL,  -- ZBE-2 / EVN-6 / EVN-2 / MSH-7
    received_at    timestamptz NOT NULL DEFAULT now(),
    movement_id    text        NOT NULL DEFAULT '',  -- ZBE-1: what a cancellation names
    referral_hint  uuid,                             -- PV1-5 from an HAD: the platform's referral id
    status         text        NOT NULL DEFAULT 'PENDING',
    referral_id    uuid,
    detail         text        NOT NULL DEFAULT '',
    attempts       int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    done_at        timestamptz,
    UNIQUE (sender_finess, control_id)
);
CREATE INDEX messages_pending ON messages (event_at, id) WHERE status = 'PENDING';
CREATE INDEX messages_unmatched ON messages (sender_finess, received_at) WHERE status = 'UNMATCHED';
CREATE INDEX messages_by_movement ON messages (sender_finess, pseudonym, movement_id);
