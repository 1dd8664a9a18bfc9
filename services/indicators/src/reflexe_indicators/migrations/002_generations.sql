-- Facts now live in one schema per generation (indicators_g<N>, see adapters/store.py) so that a
-- replay can rebuild them next to the current ones and switch over atomically. The first
-- generation is created at start-up; the old single-generation tables are dropped (the log is
-- kept forever: POST /v1/indicators/replay rebuilds everything).
DROP TABLE IF EXISTS referral_facts;
DROP TABLE IF EXISTS offer_facts;

CREATE TABLE generations (
    generation  integer PRIMARY KEY,
    state       text        NOT NULL CHECK (state IN ('building', 'current', 'retired', 'dropped', 'failed')),
    started_at  timestamptz,
    switched_at timestamptz,
    events      bigint      NOT NULL DEFAULT 0,   -- records read by the replay so far
    target      bigint,                           -- records to read (end offsets at the start)
    seconds     double precision,                 -- replay duration, start to switch-over
    error       text
);
CREATE UNIQUE INDEX generations_one_current ON generations (state) WHERE state = 'current';
CREATE UNIQUE INDEX generations_one_building ON generations (state) WHERE state = 'building';

-- Reference data for the region level (filled from reflexe_common.geography at start-up).
CREATE TABLE department_regions (
    department text PRIMARY KEY,
    region     text NOT NULL
);
