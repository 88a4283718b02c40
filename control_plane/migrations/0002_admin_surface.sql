-- The admin surface: audit log, API tokens, budget-change requests, login lockout, session families.

CREATE TABLE audit_logs (
    id            TEXT PRIMARY KEY,
    timestamp     TIMESTAMPTZ NOT NULL DEFAULT now(),
    operation     TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    user_id       TEXT,
    user_role     TEXT,
    ip_address    TEXT,
    user_agent    TEXT,
    request_id    TEXT,
    changes       JSONB,
    metadata      JSONB
);
CREATE INDEX audit_logs_timestamp ON audit_logs (timestamp DESC, id DESC);
CREATE INDEX audit_logs_resource ON audit_logs (resource_type, resource_id);
CREATE INDEX audit_logs_user ON audit_logs (user_id);
CREATE INDEX audit_logs_operation ON audit_logs (operation);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    token_hash   BYTEA NOT NULL UNIQUE,      -- SHA-256 of the value; the value is shown once
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE budget_requests (
    id                       TEXT PRIMARY KEY,
    agent_id                 TEXT NOT NULL REFERENCES agents (id),
    requester_id             TEXT NOT NULL REFERENCES users (id),
    current_budget_micros    BIGINT NOT NULL,
    requested_budget_micros  BIGINT NOT NULL CHECK (requested_budget_micros >= 0),
    approved_budget_micros   BIGINT CHECK (approved_budget_micros >= 0),
    justification            TEXT NOT NULL,
    status                   TEXT NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled')),
    reviewer_id              TEXT REFERENCES users (id),
    review_notes             TEXT,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    reviewed_at              TIMESTAMPTZ
);
CREATE INDEX budget_requests_agent ON budget_requests (agent_id);
CREATE INDEX budget_requests_status ON budget_requests (status, created_at);

ALTER TABLE users ADD COLUMN failed_logins INT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until TIMESTAMPTZ;

-- Rotating refresh tokens: a reused (already rotated) token revokes its whole family.
ALTER TABLE refresh_tokens ADD COLUMN family_id TEXT;
ALTER TABLE refresh_tokens ADD COLUMN revoked_at TIMESTAMPTZ;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
