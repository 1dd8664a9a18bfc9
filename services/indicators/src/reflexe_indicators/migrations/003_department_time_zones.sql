-- Each department's clock (reflexe_common.geography.time_zone_of, filled at start-up with the
-- regions): days and months of the indicators are local to the department, so an overseas
-- department's day ends at its own midnight, and a planned admission is on time until the end of
-- its planned day there.
ALTER TABLE department_regions ADD COLUMN IF NOT EXISTS time_zone text NOT NULL DEFAULT 'Europe/Paris';
