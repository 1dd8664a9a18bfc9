-- The HAD registry.
CREATE TABLE hads (
    finess            text PRIMARY KEY,
    name              text   NOT NULL,
    departments       text[] NOT NULL,
    mentions          text[] NOT NULL DEFAULT '{}',
    mpp_supported     text[] NOT NULL,
    equipment         text[] NOT NULL DEFAULT '{}',
    zone_communes     text[] NOT NULL,
    ehpad_conventions text[] NOT NULL DEFAULT '{}',
    authorised_places int    NOT NULL CHECK (authorised_places >= 1),
    webhook_url       text,
    email             text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hads_departments ON hads USING gin (departments);

-- Every capacity declaration, kept: the current one is the latest declared_at.
CREATE TABLE declarations (
    id                        bigserial PRIMARY KEY,
    had_finess                text        NOT NULL REFERENCES hads,
    places_available          int         NOT NULL CHECK (places_available >= 0),
    admissions_possible_today int         NOT NULL CHECK (admissions_possible_today >= 0),
    status                    text        NOT NULL,
    declared_at               timestamptz NOT NULL,
    received_at               timestamptz NOT NULL DEFAULT now(),
    channel                   text        NOT NULL,  -- rest or kafka
    UNIQUE (had_finess, declared_at)
);
CREATE INDEX declarations_latest ON declarations (had_finess, declared_at DESC);

-- One place reserved for one referral at one HAD.
CREATE TABLE holds (
    hold_id      text PRIMARY KEY,
    referral_id  uuid        NOT NULL,
    had_finess   text        NOT NULL REFERENCES hads,
    department   text        NOT NULL,
    made_at      timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    state        text        NOT NULL CHECK (state IN ('ACTIVE', 'CONFIRMED', 'CONVERTED', 'RELEASED')),
    placed_under timestamptz NOT NULL,
    converted_at timestamptz,
    answered_at  timestamptz,  -- the HAD's answer (accept or decline): response-time ranking
    released_at  timestamptz,  -- event time the place was given back (invariant checks over time)
    by_desk      boolean     NOT NULL DEFAULT false
);
CREATE INDEX holds_live ON holds (had_finess) WHERE state IN ('ACTIVE', 'CONFIRMED', 'CONVERTED');
CREATE INDEX holds_by_referral ON holds (referral_id);

-- What the matcher knows of each referral it works on.
CREATE TABLE match_requests (
    referral_id   uuid PRIMARY KEY,
    department    text    NOT NULL,
    request       bytea   NOT NULL,  -- reflexe.v1.ReferralRequest
    departments   text[]  NOT NULL DEFAULT '{}',  -- widened by the desk
    tried_hads    text[]  NOT NULL DEFAULT '{}',
    open          boolean NOT NULL DEFAULT true
);
