-- Each HAD's ledger as counts, kept in step with its holds in the same transaction as every
-- hold change: a decision reads one row per candidate HAD, whatever the number of live holds.
-- The current declaration is copied here (the declarations table keeps the history).
CREATE TABLE ledgers (
    had_finess                text PRIMARY KEY REFERENCES hads,
    places_available          int,
    admissions_possible_today int,
    status                    text,
    declared_at               timestamptz,
    active_patients           int,
    holding                   int NOT NULL DEFAULT 0 CHECK (holding >= 0),    -- ACTIVE or CONFIRMED
    confirmed                 int NOT NULL DEFAULT 0 CHECK (confirmed >= 0),  -- CONFIRMED
    promised                  int NOT NULL DEFAULT 0 CHECK (promised >= 0),   -- placed under the declaration, not RELEASED
    conversions               timestamptz[] NOT NULL DEFAULT '{}',            -- converted at or after the declaration
    -- The HAD's latest answers to offers, oldest first: when the offer was made, seconds to answer.
    answers_made_at           timestamptz[] NOT NULL DEFAULT '{}',
    answers_seconds           float8[]      NOT NULL DEFAULT '{}',
    version                   bigint NOT NULL DEFAULT 0  -- optimistic concurrency between matchers
);

-- Backfill from the holds and declarations already stored.
INSERT INTO ledgers (had_finess, places_available, admissions_possible_today, status, declared_at, active_patients,
                     holding, confirmed, promised, conversions, answers_made_at, answers_seconds)
SELECT h.finess, d.places_available, d.admissions_possible_today, d.status, d.declared_at, d.active_patients,
       (SELECT count(*) FROM holds WHERE had_finess = h.finess AND state IN ('ACTIVE', 'CONFIRMED')),
       (SELECT count(*) FROM holds WHERE had_finess = h.finess AND state = 'CONFIRMED'),
       CASE WHEN d.declared_at IS NULL
            THEN (SELECT count(*) FROM holds WHERE had_finess = h.finess AND state IN ('ACTIVE', 'CONFIRMED'))
            ELSE (SELECT count(*) FROM holds WHERE had_finess = h.finess AND state <> 'RELEASED'
                                                AND placed_under = d.declared_at) END,
       coalesce((SELECT array_agg(converted_at ORDER BY converted_at) FROM holds
                 WHERE had_finess = h.finess AND state = 'CONVERTED' AND converted_at >= d.declared_at), '{}'),
       coalesce((SELECT array_agg(made_at ORDER BY answered_at, hold_id) FROM (
                    SELECT made_at, answered_at, hold_id FROM holds WHERE had_finess = h.finess AND answered_at IS NOT NULL
                    ORDER BY answered_at DESC, hold_id DESC LIMIT 100) a), '{}'),
       coalesce((SELECT array_agg(extract(epoch FROM answered_at - made_at)::float8 ORDER BY answered_at, hold_id) FROM (
                    SELECT made_at, answered_at, hold_id FROM holds WHERE had_finess = h.finess AND answered_at IS NOT NULL
                    ORDER BY answered_at DESC, hold_id DESC LIMIT 100) a), '{}')
FROM hads h
LEFT JOIN LATERAL (SELECT * FROM declarations WHERE had_finess = h.finess ORDER BY declared_at DESC LIMIT 1) d ON true;

