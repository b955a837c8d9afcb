-- Endpoint circuit breaker (PostgreSQL). Keep in step with ../sqlite/0002_breaker.sql.
-- The breaker lives in the endpoint's row so it survives restarts and is
-- shared by every engine process on the database; engine/src/breaker.rs
-- declares its rules. Times are unix milliseconds.

ALTER TABLE endpoints ADD COLUMN breaker_state TEXT NOT NULL DEFAULT 'closed'
    CHECK (breaker_state IN ('closed', 'open'));
ALTER TABLE endpoints ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0
    CHECK (consecutive_failures >= 0);
ALTER TABLE endpoints ADD COLUMN failing_since BIGINT;      -- first failure of the current run
ALTER TABLE endpoints ADD COLUMN breaker_opened_at BIGINT;
ALTER TABLE endpoints ADD COLUMN breaker_probe_at BIGINT;   -- an open breaker's next probe
-- Why a disabled endpoint is disabled: an operator, a 410 Gone, or the breaker.
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT
    CHECK (disabled_reason IN ('operator', 'gone', 'breaker'));

-- Append-only history of breaker changes.
CREATE TABLE endpoint_breaker_transitions (
    seq                  BIGSERIAL PRIMARY KEY,
    endpoint_id          TEXT NOT NULL REFERENCES endpoints (id),
    from_state           TEXT NOT NULL CHECK (from_state IN ('closed', 'open')),
    to_state             TEXT NOT NULL CHECK (to_state IN ('closed', 'open', 'disabled')),
    consecutive_failures BIGINT NOT NULL,
    at                   BIGINT NOT NULL
);
CREATE INDEX endpoint_breaker_transitions_endpoint ON endpoint_breaker_transitions (endpoint_id, seq);
