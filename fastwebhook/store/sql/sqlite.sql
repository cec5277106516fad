-- name: schema
CREATE TABLE IF NOT EXISTS executions (
    seq          INTEGER PRIMARY KEY,
    id           BLOB NOT NULL UNIQUE,
    workflow     TEXT NOT NULL,
    version      TEXT NOT NULL,
    status       TEXT NOT NULL,
    dedup_key    TEXT,
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    owner        TEXT,
    lease_until  REAL,
    attempts     INTEGER NOT NULL DEFAULT 1,
    error        TEXT,
    request      BLOB NOT NULL,
    body         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_pending ON executions (seq) WHERE status IN ('queued', 'started');
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (workflow, seq);
CREATE TABLE IF NOT EXISTS dedup (
    hash        INTEGER PRIMARY KEY,
    execution   BLOB NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY,
    execution    BLOB NOT NULL,
    position     INTEGER NOT NULL,
    node         TEXT NOT NULL,
    type         TEXT NOT NULL,
    status       TEXT NOT NULL,
    result       BLOB,
    error        TEXT,
    logs         BLOB,
    duration_ms  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_execution ON jobs (execution, position);
CREATE TABLE IF NOT EXISTS requests (
    seq          INTEGER PRIMARY KEY,
    at           REAL NOT NULL,
    ip           TEXT NOT NULL,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    workflow     TEXT,
    status       INTEGER NOT NULL,
    reason       TEXT,
    body_size    INTEGER NOT NULL,
    duration_ms  REAL NOT NULL,
    request_id   TEXT NOT NULL,
    execution    BLOB
);

-- name: find_dedup
SELECT hash, execution FROM dedup WHERE expires_at > ? AND hash IN ({hashes});

-- name: insert_execution
INSERT INTO executions (id, workflow, version, status, dedup_key, created_at, owner, lease_until, request, body)
VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?);

-- name: upsert_dedup
INSERT OR REPLACE INTO dedup (hash, execution, expires_at) VALUES (?, ?, ?);

-- name: insert_request
INSERT INTO requests (at, ip, method, path, workflow, status, reason, body_size, duration_ms, request_id, execution)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: mark_started
UPDATE executions SET status = 'started', started_at = ? WHERE id = ? AND status = 'queued';

-- name: mark_finished
UPDATE executions SET status = ?, started_at = coalesce(started_at, ?), finished_at = ?, error = ?,
       owner = NULL, lease_until = NULL
WHERE id = ?;

-- name: insert_job
INSERT INTO jobs (execution, position, node, type, status, result, error, logs, duration_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: claim
UPDATE executions SET owner = ?, lease_until = ?, attempts = attempts + 1
WHERE seq IN (
    SELECT seq FROM executions
    WHERE status IN ('queued', 'started') AND (lease_until < ? OR owner IN ({owners}))
    ORDER BY seq LIMIT ?)
RETURNING id, workflow, version, created_at, request, body, dedup_key, attempts, seq;

-- name: pending_owners
SELECT DISTINCT owner FROM executions WHERE status IN ('queued', 'started') AND owner IS NOT NULL;

-- name: renew
UPDATE executions SET lease_until = ? WHERE owner = ? AND status IN ('queued', 'started');

-- name: live_dedup
SELECT hash, execution, expires_at FROM dedup WHERE expires_at > ? ORDER BY expires_at DESC LIMIT ?;

-- name: get_execution
SELECT id, workflow, version, status, dedup_key, created_at, started_at, finished_at, attempts, error, request, body
FROM executions WHERE id = ?;

-- name: get_jobs
SELECT node, type, status, result, error, logs, duration_ms FROM jobs WHERE execution = ? ORDER BY position;

-- name: list_executions
SELECT id, workflow, version, status, dedup_key, created_at, started_at, finished_at, attempts, error, request, body
FROM executions
WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2)
  AND (?3 IS NULL OR seq < (SELECT seq FROM executions WHERE id = ?3))
ORDER BY seq DESC LIMIT ?4;

-- name: list_requests
SELECT seq, at, ip, method, path, workflow, status, reason, body_size, duration_ms, request_id, execution
FROM requests WHERE (?1 IS NULL OR seq < ?1) ORDER BY seq DESC LIMIT ?2;

-- name: purge_jobs
DELETE FROM jobs WHERE execution IN (
    SELECT id FROM executions WHERE created_at < ? AND status NOT IN ('queued', 'started'));

-- name: purge_executions
DELETE FROM executions WHERE created_at < ? AND status NOT IN ('queued', 'started');

-- name: purge_requests
DELETE FROM requests WHERE at < ?;

-- name: purge_dedup
DELETE FROM dedup WHERE expires_at < ?;
