-- The audit trail every service keeps in its own schema: who (the token's pseudonymous `sub`,
-- the role:scope actor) did or tried what (method + route template, or a command name), on
-- which resource (department, referral ids: never patient data), with which outcome, when.
-- Reads of referrals, refusals (401, 403, 409) and desk/HAD commands all land here.
CREATE TABLE IF NOT EXISTS audit_trail (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    subject      text        NOT NULL,          -- 'anonymous' when no token was verified
    actor        text,                          -- role:scope of the verified caller
    action       text        NOT NULL,          -- 'GET /v1/referrals/{referral_id}' or 'desk.offer'
    department   text,
    referral_ids uuid[]      NOT NULL DEFAULT '{}',
    status       int         NOT NULL,          -- the HTTP status answered
    code         text        NOT NULL,          -- the problem code, 'OK' on success
    detail       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_trail_by_subject ON audit_trail (subject, id);
CREATE INDEX IF NOT EXISTS audit_trail_by_department ON audit_trail (department, id);
CREATE INDEX IF NOT EXISTS audit_trail_by_time ON audit_trail (at);
CREATE INDEX IF NOT EXISTS audit_trail_by_referral ON audit_trail USING gin (referral_ids);

-- Append-only, enforced by the database itself: any UPDATE, DELETE or TRUNCATE raises, whoever
-- runs it (statement-level, so even one touching no row is refused). The retention job never
-- touches this table.
CREATE OR REPLACE FUNCTION audit_trail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_trail is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER audit_trail_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_trail
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_append_only();

-- Retention (reflexe_common.retention) deletes by age: published outbox rows, settled relay
-- batches and processed inbox rows, oldest first, in small batches.
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_batches_settled ON outbox_batches (created_at) WHERE state <> 'SENDING';
CREATE INDEX IF NOT EXISTS inbox_processed ON inbox (processed_at);
