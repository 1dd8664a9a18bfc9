-- Server-side sessions of the web pages (OpenID Connect login). The browser holds only a random
-- session id; the row is found by its SHA-256, so the table alone does not let anyone act as a
-- logged-in person's browser. Tokens stay here and are refreshed here.
CREATE TABLE page_logins (
    state_hash    bytea       PRIMARY KEY,
    code_verifier text        NOT NULL,
    nonce         text        NOT NULL,
    next_path     text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE page_sessions (
    id_hash            bytea       PRIMARY KEY,
    subject            text        NOT NULL,
    access_token       text        NOT NULL,
    refresh_token      text,
    id_token           text,
    access_expires_at  timestamptz NOT NULL,
    -- The provider's idle limit for the refresh token, and the session's own absolute limit.
    refresh_expires_at timestamptz,
    expires_at         timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX page_sessions_expiry ON page_sessions (expires_at);
