-- The HAD's census declared with its capacity: every patient in its care, not only those the
-- platform referred (NULL: not declared). Occupancy and viability are computed from it.
ALTER TABLE declarations ADD COLUMN IF NOT EXISTS active_patients int CHECK (active_patients >= 0);
