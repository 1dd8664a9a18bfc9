-- The neighbouring departments a referral's search was widened to (SearchWidened): their desks
-- follow the referral's later events on their stream too, as they may find it an HAD.
CREATE TABLE referral_widenings (
    referral_id text        NOT NULL,
    department  text        NOT NULL,
    widened_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (referral_id, department)
);
CREATE INDEX referral_widenings_recorded ON referral_widenings (widened_at);
