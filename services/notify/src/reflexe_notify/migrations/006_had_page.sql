-- The referrals that concern each HAD, as its events told them: which the HAD page reads from
-- the referral service (with the HAD's own token, which decides what it may still see), and
-- to which HADs a cancellation or an overdue admission is told on their live stream. The HAD's
-- stream itself lives in desk_events under the key 'had:<FINESS>' (numbered, resumable, pruned
-- like a department's).
CREATE TABLE had_referrals (
    had_finess   text        NOT NULL,
    referral_id  text        NOT NULL,
    department   text        NOT NULL,
    concerned    boolean     NOT NULL,  -- false once its offer ended (declined, expired, withdrawn) or the stay did
    last_event   text        NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (had_finess, referral_id)
);
CREATE INDEX had_referrals_by_referral ON had_referrals (referral_id) WHERE concerned;
CREATE INDEX had_referrals_recent ON had_referrals (had_finess, updated_at DESC);
