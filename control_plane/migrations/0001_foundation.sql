-- The foundation: users, providers, agents, IC tokens and the ledger.
-- Money is BIGINT microdollars. Every ledger column carries its invariant as a CHECK.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'user', 'viewer')),
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_live ON users (lower(email)) WHERE status <> 'deleted';

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE providers (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    type           TEXT NOT NULL,
    endpoint       TEXT NOT NULL,
    models         TEXT[] NOT NULL DEFAULT '{}',
    key_ciphertext BYTEA NOT NULL,           -- AES-256-GCM under the master key, AAD = id
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX providers_name ON providers (lower(name));

CREATE TABLE agents (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    description        TEXT,
    tags               TEXT[] NOT NULL DEFAULT '{}',
    owner_id           TEXT NOT NULL REFERENCES users (id),
    project_id         TEXT REFERENCES projects (id),
    status             TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    budget_micros      BIGINT NOT NULL CHECK (budget_micros >= 0),
    spent_micros       BIGINT NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    outstanding_micros BIGINT NOT NULL DEFAULT 0 CHECK (outstanding_micros >= 0),
    -- usage charged beyond a grant (or on a closed lease): recorded, never hidden
    overdrawn_micros   BIGINT NOT NULL DEFAULT 0 CHECK (overdrawn_micros >= 0),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX agents_owner ON agents (owner_id);

CREATE TABLE agent_providers (
    agent_id    TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    provider_id TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    position    INT NOT NULL,
    PRIMARY KEY (agent_id, provider_id)
);
CREATE INDEX agent_providers_provider ON agent_providers (provider_id);

CREATE TABLE ic_tokens (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    token_hash BYTEA NOT NULL UNIQUE,        -- SHA-256 of the token value; the value is shown once
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX ic_tokens_one_live ON ic_tokens (agent_id) WHERE revoked_at IS NULL;

CREATE TABLE leases (
    id             TEXT PRIMARY KEY,
    agent_id       TEXT NOT NULL REFERENCES agents (id),
    holder         TEXT,
    granted_micros BIGINT NOT NULL CHECK (granted_micros >= 0),
    spent_micros   BIGINT NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    overdrawn_micros BIGINT NOT NULL DEFAULT 0 CHECK (overdrawn_micros >= 0),
    status         TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'expired')),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at     TIMESTAMPTZ NOT NULL,
    closed_at      TIMESTAMPTZ
);
CREATE INDEX leases_agent ON leases (agent_id);
CREATE INDEX leases_open_expiry ON leases (expires_at) WHERE status = 'open';

-- One row per LLM call, whichever way it arrived; the key makes reporting idempotent.
CREATE TABLE usage_events (
    agent_id      TEXT NOT NULL REFERENCES agents (id),
    event_id      TEXT NOT NULL,
    lease_id      TEXT REFERENCES leases (id),
    cost_micros   BIGINT NOT NULL CHECK (cost_micros >= 0),
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    model         TEXT NOT NULL,
    provider      TEXT NOT NULL,
    status        TEXT NOT NULL,
    latency_ms    INT,
    occurred_at   TIMESTAMPTZ NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, event_id)
);
CREATE INDEX usage_events_lease ON usage_events (lease_id);

CREATE TABLE budget_changes (
    id            BIGSERIAL PRIMARY KEY,
    agent_id      TEXT NOT NULL REFERENCES agents (id),
    old_micros    BIGINT NOT NULL,
    new_micros    BIGINT NOT NULL,
    changed_by    TEXT REFERENCES users (id),
    reason        TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX budget_changes_agent ON budget_changes (agent_id, created_at);
