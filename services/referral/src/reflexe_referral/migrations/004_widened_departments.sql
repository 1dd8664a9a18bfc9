-- The departments a desk widened the search to (its own excluded), kept with the state row so that
-- the neighbouring desk's queue finds the referrals it may now serve. Rows written before this
-- migration get them at their next event.
ALTER TABLE referrals ADD COLUMN widened_to text[] NOT NULL DEFAULT '{}';
CREATE INDEX referrals_open_by_widened_department ON referrals USING gin (widened_to)
    WHERE status NOT IN ('INELIGIBLE', 'CANCELLED', 'DISCHARGED', 'ADMITTED') AND widened_to <> '{}';
