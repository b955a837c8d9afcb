-- hookshift capture store, schema version 1 (SQLite). Keep in step with
-- ../postgres/0001_captures.sql: the two differ only in types (INTEGER/BLOB
-- here, BIGINT/BYTEA there) and in how an auto-incrementing key is spelled.
--
-- Written by the tee proxy, read by the comparator and by
-- `hookshift captures export`. Append-only: rows are inserted, never updated
-- or deleted. Times are unix milliseconds; latencies are microseconds.
-- Header lists are JSON arrays of [name, value] pairs, names in the case and
-- order they were seen on the wire. Bodies are the exact bytes.

-- Facts about the store itself: ('schema_version', '1'), ('created_at', ms).
CREATE TABLE capture_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per outbound webhook attempt that reached an egress listener.
--
-- Pairing key: (event_id, endpoint_url, attempt). `attempt` is counted per
-- (sender, event_id, endpoint_url) in arrival order, from 1.
--
-- role:
--   primary      forwarded to the real receiver; response/fault is what the
--                receiver did.
--   shadow       not forwarded; answered with the primary's exchange for the
--                same key (source = 'replayed').
--   shadow_only  not forwarded; the primary never made this attempt (or did
--                not within the pairing wait); answered with the configured
--                default (source = 'default').
--   passthrough  recorder-only mode (scenario runs): forwarded to the
--                receiver for both senders, recorded, nothing replayed.
--
-- fault (NULL when a response was received or replayed):
--   refused   the receiver refused the connection
--   reset     the connection was reset / closed without a complete response
--   timeout   no complete response before the proxy's upstream timeout, or
--             the sender gave up first (its own deadline); for a shadow the
--             proxy hung until the sender gave up
--   tunnel    a CONNECT tunnel: opaque bytes, only the target is known
--             (note says so); not comparable
--   error     anything else (note holds the detail)
CREATE TABLE egress_exchanges (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    sender           TEXT NOT NULL CHECK (sender IN ('legacy', 'engine')),
    role             TEXT NOT NULL CHECK (role IN ('primary', 'shadow', 'shadow_only', 'passthrough')),
    source           TEXT NOT NULL CHECK (source IN ('receiver', 'replayed', 'default')),
    event_id         TEXT,              -- from the sender's event-id header; NULL if absent
    endpoint_url     TEXT NOT NULL,     -- absolute URL the sender asked for
    attempt          INTEGER NOT NULL CHECK (attempt > 0),
    ramp_bp          INTEGER NOT NULL,  -- ramp stage in basis points (0..=10000) at arrival
    method           TEXT NOT NULL,
    target           TEXT NOT NULL,     -- request-target as received (absolute form)
    http_version     TEXT NOT NULL,     -- 'HTTP/1.1', 'HTTP/1.0'
    request_headers  TEXT NOT NULL,     -- JSON [[name, value], ...] as received
    request_body     BLOB NOT NULL,
    response_status  INTEGER,           -- NULL on a fault
    response_headers TEXT,              -- JSON [[name, value], ...]; NULL on a fault
    response_body    BLOB,              -- NULL on a fault
    fault            TEXT CHECK (fault IS NULL OR fault IN ('refused', 'reset', 'timeout', 'tunnel', 'error')),
    latency_us       INTEGER NOT NULL,  -- request received -> response complete (or fault)
    started_at       INTEGER NOT NULL,  -- unix ms when the request head arrived
    note             TEXT
);
CREATE INDEX egress_exchanges_key ON egress_exchanges (event_id, endpoint_url, attempt, sender);

-- One row per producer API call seen by the ingress tee, written once both
-- senders answered (or the mirror was dropped or failed).
CREATE TABLE ingress_exchanges (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    method            TEXT NOT NULL,
    path              TEXT NOT NULL,    -- path and query as received
    request_headers   TEXT NOT NULL,    -- JSON [[name, value], ...]
    request_body      BLOB NOT NULL,    -- as forwarded (with an injected id, if any)
    event_id          TEXT,             -- for POST /v1/events: the id both senders got
    injected_id       INTEGER NOT NULL DEFAULT 0 CHECK (injected_id IN (0, 1)),
    primary_sender    TEXT NOT NULL CHECK (primary_sender IN ('legacy', 'engine')),
    primary_status    INTEGER,          -- NULL when the primary could not be reached
    primary_headers   TEXT,
    primary_body      BLOB,
    primary_latency_us INTEGER NOT NULL,
    primary_error     TEXT,
    shadow_status     INTEGER,          -- NULL when dropped or failed
    shadow_headers    TEXT,
    shadow_body       BLOB,
    shadow_latency_us INTEGER,
    shadow_error      TEXT,             -- 'dropped: queue full', or the failure
    at                INTEGER NOT NULL  -- unix ms when the request arrived
);

-- The ramp's audit log; the latest row is the current stage, so the stage
-- survives restarts. Stages are basis points: 100 = 1%, 10000 = 100%.
CREATE TABLE ramp_changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    from_bp INTEGER NOT NULL CHECK (from_bp BETWEEN 0 AND 10000),
    to_bp   INTEGER NOT NULL CHECK (to_bp BETWEEN 0 AND 10000),
    reason  TEXT NOT NULL,
    actor   TEXT NOT NULL              -- 'cli', 'gate', 'api', ... and the peer address
);
