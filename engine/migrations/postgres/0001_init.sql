-- hookshift engine schema (PostgreSQL). Keep in step with ../sqlite/0001_init.sql:
-- the two differ only in types (BIGINT/BYTEA/BOOLEAN here, INTEGER/BLOB there)
-- and in how an auto-incrementing key is spelled. Times are unix milliseconds.
-- The state and transition lists mirror engine/src/state.rs; the test
-- `transition_table_matches_database` checks that they agree.

CREATE TABLE endpoints (
    id               TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    description      TEXT,
    event_types      TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings; empty = all
    disabled         BOOLEAN NOT NULL DEFAULT FALSE,
    rate_limit_per_s BIGINT CHECK (rate_limit_per_s IS NULL OR rate_limit_per_s > 0),
    profile          TEXT,                         -- signing profile; NULL = server default
    deleted_at       BIGINT,                      -- soft delete: no new deliveries, history kept
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- Signing secrets. The current one has expires_at NULL; a rotated-out one
-- keeps signing until expires_at (the grace period).
CREATE TABLE endpoint_secrets (
    seq         BIGSERIAL PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints (id),
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT
);
CREATE INDEX endpoint_secrets_endpoint ON endpoint_secrets (endpoint_id, seq);

CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    tenant          TEXT,
    payload_raw     BYTEA NOT NULL,   -- the payload's bytes exactly as received
    payload         TEXT NOT NULL,   -- the parsed value, as JSON text, for queries
    request_hash    TEXT NOT NULL,   -- SHA-256 of the request body, for idempotent reuse
    idempotency_key TEXT UNIQUE,
    created_at      BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES events (id),
    endpoint_id      TEXT NOT NULL REFERENCES endpoints (id),
    state            TEXT NOT NULL CHECK (state IN
        ('pending', 'in_flight', 'succeeded', 'retry_scheduled', 'failed', 'cancelled')),
    attempt_count    BIGINT NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    next_attempt_at  BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    claimed_from     TEXT,           -- the state a claim or release moved it out of
    last_outcome     TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (event_id, endpoint_id),
    -- A lease exists exactly while an attempt is in flight.
    CHECK ((state = 'in_flight') = (lease_expires_at IS NOT NULL AND lease_owner IS NOT NULL)),
    -- A delivery waiting for an attempt knows when it is due.
    CHECK (state NOT IN ('pending', 'retry_scheduled') OR next_attempt_at IS NOT NULL)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at)
    WHERE state IN ('pending', 'retry_scheduled');
CREATE INDEX deliveries_leases ON deliveries (lease_expires_at) WHERE state = 'in_flight';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id);
CREATE INDEX deliveries_state ON deliveries (state, id);

-- Append-only history of every state change; the comparator reads it.
CREATE TABLE delivery_transitions (
    seq         BIGSERIAL PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    from_state  TEXT,                -- NULL for the creating transition
    to_state    TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    outcome     TEXT,                -- outcome class of the attempt that caused it
    reason      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    -- CASE, not OR: a NULL from_state would make an IN test NULL, and a
    -- CHECK that is NULL passes.
    CHECK (CASE WHEN from_state IS NULL THEN to_state = 'pending'
        ELSE (from_state || '>' || to_state) IN (
            'pending>in_flight', 'retry_scheduled>in_flight',
            'in_flight>succeeded', 'in_flight>retry_scheduled', 'in_flight>failed', 'in_flight>pending',
            'pending>cancelled', 'retry_scheduled>cancelled',
            'retry_scheduled>failed',
            'succeeded>pending', 'failed>pending', 'cancelled>pending'
        ) END)
);
CREATE INDEX delivery_transitions_delivery ON delivery_transitions (delivery_id, seq);

CREATE TABLE attempts (
    id                  TEXT PRIMARY KEY,
    delivery_id         TEXT NOT NULL REFERENCES deliveries (id),
    attempt             BIGINT NOT NULL CHECK (attempt > 0),
    request_headers     TEXT NOT NULL,   -- JSON [[name, value], ...] as sent
    body_sha256         TEXT NOT NULL,
    response_status     BIGINT,
    response_headers    TEXT,            -- JSON [[name, value], ...]
    response_body       BYTEA,            -- capped
    response_truncated  BOOLEAN NOT NULL DEFAULT FALSE,
    duration_ms         BIGINT NOT NULL,
    outcome             TEXT NOT NULL CHECK (outcome IN (
        'delivered', 'server_error', 'rate_limited', 'timeout', 'connect_error', 'reset',
        'body_read', 'client_error', 'redirect', 'invalid_url', 'blocked_destination', 'internal')),
    error               TEXT,
    started_at          BIGINT NOT NULL,
    finished_at         BIGINT NOT NULL,
    UNIQUE (delivery_id, attempt)
);
