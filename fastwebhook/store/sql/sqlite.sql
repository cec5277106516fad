-- name: schema
-- The intake: one row per group commit, the batch's deliveries in one blob (batch_codec.py).
CREATE TABLE IF NOT EXISTS intake (
    seq          INTEGER PRIMARY KEY,
    first_id     BLOB NOT NULL,
    last_id      BLOB NOT NULL,
    first_at     REAL NOT NULL,
    count        INTEGER NOT NULL,
    deliveries   BLOB NOT NULL
);
-- The claim cursor: intake rows up to claimed_seq have their execution rows, and so have the
-- first `partial` deliveries of the row after it (a claim takes as many as it was asked for).
CREATE TABLE IF NOT EXISTS claims (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    claimed_seq  INTEGER NOT NULL,
    partial      INTEGER NOT NULL DEFAULT 0,
    claimer      TEXT                              -- (no longer written: claim_applied says it)
);
INSERT OR IGNORE INTO claims (id, claimed_seq, partial) VALUES (1, 0, 0);
-- Time-ordered ids as the key: inserts append; the request stays in its intake blob.
CREATE TABLE IF NOT EXISTS executions (
    id           BLOB PRIMARY KEY,
    workflow     TEXT NOT NULL,
    version      TEXT NOT NULL,
    status       TEXT NOT NULL,
    dedup_key    TEXT,
    duplicate_of BLOB,
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    owner        TEXT,
    lease_until  REAL,
    attempts     INTEGER NOT NULL DEFAULT 1,
    error        TEXT,
    intake_seq   INTEGER NOT NULL,
    intake_index INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS executions_pending ON executions (id) WHERE status IN ('queued', 'started');
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (workflow, id);
-- The unique index of dedup keys, taken at the claim.
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
-- Requests that did not become an async acceptance (those are lines of the intake itself).
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
-- Workflows created through the admin API: each the JSON of a [workflows.<key>] table.
CREATE TABLE IF NOT EXISTS stored_workflows (
    key          TEXT PRIMARY KEY,
    definition   BLOB NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
-- Bulk replays' Idempotency-Key headers and their first answers (NULL while that replay runs),
-- kept for [storage] retention.
CREATE TABLE IF NOT EXISTS replay_keys (
    key          TEXT PRIMARY KEY,
    answer       BLOB,
    created_at   REAL NOT NULL
);

-- name: append
INSERT INTO intake (first_id, last_id, first_at, count, deliveries) VALUES (?, ?, ?, ?, ?);

-- name: find_dedup
SELECT hash, execution FROM dedup WHERE expires_at > ? AND hash IN ({hashes});

-- name: repair_cursor
-- A claim cursor past every intake row: the purge of an earlier version emptied the table, and
-- SQLite numbers the next row after the highest one left (1), which the cursor would pass by.
-- Brought back to the highest row (no row above it exists: nothing is skipped).
UPDATE claims SET claimed_seq = (SELECT coalesce(max(seq), 0) FROM intake), partial = 0
WHERE id = 1 AND claimed_seq > (SELECT coalesce(max(seq), 0) FROM intake);

-- name: claim_cursor
SELECT claimed_seq, partial FROM claims WHERE id = 1;

-- name: unclaimed
SELECT seq FROM intake WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: intake_batch
SELECT deliveries FROM intake WHERE seq = ?;

-- name: advance_cursor
UPDATE claims SET claimed_seq = ?, partial = ? WHERE id = 1;

-- name: claim_temp
-- What a claim takes, staged on its connection (a TEMP table: no lock on the database).
CREATE TEMP TABLE IF NOT EXISTS claiming (
    pos INTEGER PRIMARY KEY, id BLOB NOT NULL, workflow TEXT NOT NULL, version TEXT NOT NULL,
    dedup_key TEXT, hash INTEGER, first_of_hash INTEGER NOT NULL, expires REAL NOT NULL,
    created_at REAL NOT NULL, intake_seq INTEGER NOT NULL, intake_index INTEGER NOT NULL,
    no_nodes INTEGER NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL, now REAL NOT NULL,
    holder BLOB  -- set by claim_apply: the execution holding this key, when another one
);
-- Whether claim_apply moved the cursor (1) or found it moved by another process's claim (0):
-- read from this connection's own table, which no other claim can write in between.
CREATE TEMP TABLE IF NOT EXISTS claim_applied (moved INTEGER NOT NULL);

-- name: claim_clear
DELETE FROM temp.claiming; DELETE FROM temp.claim_applied;

-- name: claim_stage
INSERT INTO temp.claiming VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL);

-- name: claim_apply
-- One script, one transaction, one thread crossing. Nothing applies unless the cursor is still
-- where the claim read it ({cursor}, {partial}): another process's claim got there first.
-- Each key goes into the unique index unless a live execution holds it; then every staged
-- delivery whose key another execution holds notes that holder, and each gets its row,
-- `duplicate` (naming the holder) when it has one.
BEGIN IMMEDIATE;
INSERT INTO dedup (hash, execution, expires_at)
    SELECT hash, id, expires FROM temp.claiming
    WHERE hash IS NOT NULL AND first_of_hash = 1
      AND (SELECT claimed_seq = {cursor} AND partial = {partial} FROM claims WHERE id = 1)
    ON CONFLICT (hash) DO UPDATE SET execution = excluded.execution, expires_at = excluded.expires_at
    WHERE dedup.expires_at <= (SELECT max(now) FROM temp.claiming);
UPDATE temp.claiming SET holder = d.execution
    FROM dedup d WHERE d.hash = claiming.hash AND d.execution != claiming.id;
INSERT OR IGNORE INTO executions (id, workflow, version, status, dedup_key, duplicate_of, created_at,
        started_at, finished_at, owner, lease_until, intake_seq, intake_index)
    WITH staged AS (
        SELECT c.*, CASE WHEN holder IS NOT NULL THEN 'duplicate'
                         WHEN no_nodes = 1 THEN 'resolved' ELSE 'queued' END AS status
        FROM temp.claiming c)
    SELECT id, workflow, version, status, dedup_key, holder,
           created_at, CASE WHEN status != 'queued' THEN now END, CASE WHEN status != 'queued' THEN now END,
           CASE WHEN status = 'queued' THEN owner END, CASE WHEN status = 'queued' THEN lease_until END,
           intake_seq, intake_index
    FROM staged
    WHERE (SELECT claimed_seq = {cursor} AND partial = {partial} FROM claims WHERE id = 1);
UPDATE claims SET claimed_seq = {new_cursor}, partial = {new_partial}
    WHERE id = 1 AND claimed_seq = {cursor} AND partial = {partial};
INSERT INTO temp.claim_applied VALUES (changes());
COMMIT;

-- name: claim_outcome
-- Read after claim_apply, in one crossing: whether it moved the cursor (position -1), then the
-- staged deliveries whose key another execution holds, and which.
SELECT -1, moved FROM temp.claim_applied
UNION ALL
SELECT pos, holder FROM temp.claiming WHERE holder IS NOT NULL;

-- name: reclaim
UPDATE executions SET owner = ?, lease_until = ?, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM executions INDEXED BY executions_pending
    WHERE status IN ('queued', 'started') AND (lease_until < ? OR owner IN ({owners}))
    ORDER BY id LIMIT ?)
RETURNING intake_seq, intake_index, attempts;

-- name: reclaimable
SELECT 1 FROM executions INDEXED BY executions_pending
WHERE status IN ('queued', 'started') AND (lease_until < ? OR owner IN ({owners})) LIMIT 1;

-- name: pending_owners
SELECT DISTINCT owner FROM executions INDEXED BY executions_pending
WHERE status IN ('queued', 'started') AND owner IS NOT NULL;

-- name: renew
UPDATE executions SET lease_until = ? WHERE owner = ? AND status IN ('queued', 'started');

-- name: record_temp
-- What a batch of records writes, staged on its connection, and the table of allowed
-- transitions (store/rows.py's TRANSITIONS), filled at open.
CREATE TEMP TABLE IF NOT EXISTS finals (
    id BLOB PRIMARY KEY, status TEXT NOT NULL, started_at REAL, finished_at REAL, error TEXT
);
CREATE TEMP TABLE IF NOT EXISTS new_jobs (
    execution BLOB NOT NULL, position INTEGER NOT NULL, node TEXT NOT NULL, type TEXT NOT NULL,
    status TEXT NOT NULL, result BLOB, error TEXT, logs BLOB, duration_ms REAL NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS new_requests (
    at REAL NOT NULL, ip TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, workflow TEXT,
    status INTEGER NOT NULL, reason TEXT, body_size INTEGER NOT NULL, duration_ms REAL NOT NULL,
    request_id TEXT NOT NULL, execution BLOB
);
CREATE TEMP TABLE IF NOT EXISTS transitions (before TEXT NOT NULL, after TEXT NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS new_alerts (
    failed BLOB NOT NULL, id BLOB NOT NULL, at REAL NOT NULL, deliveries BLOB NOT NULL,
    appended INTEGER NOT NULL DEFAULT 0
);

-- name: record_clear
DELETE FROM temp.finals; DELETE FROM temp.new_jobs; DELETE FROM temp.new_requests;

-- name: stage_final
INSERT INTO temp.finals VALUES (?, ?, ?, ?, ?);

-- name: stage_job
INSERT INTO temp.new_jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: stage_request
INSERT INTO temp.new_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: alerts_clear
DELETE FROM temp.new_alerts;

-- name: stage_alert
INSERT INTO temp.new_alerts (failed, id, at, deliveries) VALUES (?, ?, ?, ?);

-- name: alerts_apply
-- Before record_apply, in its transaction, when failure workflows' deliveries come with the
-- records: each goes into the intake, a batch of its own, if its failed execution is still
-- pending, so that this transaction's status change is the one that makes it final (not
-- another attempt's, earlier). The alert and the final status commit together, or neither does.
UPDATE temp.new_alerts SET appended = 1
WHERE failed IN (SELECT id FROM executions WHERE id IN (SELECT failed FROM temp.new_alerts)
                 AND status IN ('queued', 'started'));
INSERT INTO intake (first_id, last_id, first_at, count, deliveries)
    SELECT id, id, at, 1, deliveries FROM temp.new_alerts WHERE appended = 1 ORDER BY rowid;

-- name: alerts_appended
-- Read in that transaction, before its COMMIT.
SELECT id FROM temp.new_alerts WHERE appended = 1;

-- name: stage_transition
INSERT INTO temp.transitions VALUES (?, ?);

-- name: record_apply
-- One script, one transaction (sqlite.py puts its BEGIN and COMMIT around), one thread
-- crossing. A change the transition table does not allow (a late 'failed' after 'resolved')
-- is left out.
UPDATE executions SET status = f.status, started_at = coalesce(executions.started_at, f.started_at),
       finished_at = f.finished_at, error = f.error,
       owner = CASE WHEN f.status = 'started' THEN executions.owner END,
       lease_until = CASE WHEN f.status = 'started' THEN executions.lease_until END
FROM temp.finals f
WHERE executions.id = f.id
  AND executions.status IN (SELECT before FROM temp.transitions t WHERE t.after = f.status);
INSERT INTO jobs (execution, position, node, type, status, result, error, logs, duration_ms)
    SELECT * FROM temp.new_jobs;
INSERT INTO requests (at, ip, method, path, workflow, status, reason, body_size, duration_ms, request_id, execution)
    SELECT * FROM temp.new_requests;

-- name: record_final
-- One execution's change, when the transition table allows it: {allowed} lists the statuses it
-- may follow (record() fills them in from store/rows.py's TRANSITIONS, per status).
UPDATE executions SET status = ?1, started_at = coalesce(started_at, ?2), finished_at = ?3, error = ?4,
       owner = CASE WHEN ?1 = 'started' THEN owner END,
       lease_until = CASE WHEN ?1 = 'started' THEN lease_until END
WHERE id = ?5 AND status IN ({allowed});

-- name: insert_request
INSERT INTO requests (at, ip, method, path, workflow, status, reason, body_size, duration_ms, request_id, execution)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: pending_by_workflow
SELECT workflow, count(*) FROM executions INDEXED BY executions_pending
WHERE status IN ('queued', 'started') GROUP BY workflow;

-- name: unfinished
SELECT (SELECT coalesce(sum(count), 0) FROM intake WHERE seq > (SELECT claimed_seq FROM claims WHERE id = 1))
         - (SELECT partial FROM claims WHERE id = 1),
       (SELECT count(*) FROM executions INDEXED BY executions_pending WHERE status IN ('queued', 'started'));

-- name: live_dedup
SELECT hash, execution, expires_at FROM dedup WHERE expires_at > ? ORDER BY expires_at DESC LIMIT ?;

-- name: unclaimed_newest
SELECT seq, deliveries FROM intake WHERE seq > (SELECT claimed_seq FROM claims WHERE id = 1)
  AND (?1 IS NULL OR first_id < ?1)
ORDER BY seq DESC LIMIT ?2;

-- name: intake_holding
SELECT seq, first_id, deliveries FROM intake WHERE last_id >= ?1 AND first_id <= ?1 ORDER BY seq DESC LIMIT 8;

-- name: get_execution
SELECT id, workflow, version, status, dedup_key, duplicate_of, created_at, started_at, finished_at,
       attempts, error, intake_seq, intake_index
FROM executions WHERE id = ?;

-- name: get_jobs
SELECT execution, position, node, type, status, result, error, logs, duration_ms
FROM jobs WHERE execution = ? ORDER BY position;

-- name: list_executions
SELECT id, workflow, version, status, dedup_key, duplicate_of, created_at, started_at, finished_at,
       attempts, error, intake_seq, intake_index
FROM executions
WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3)
ORDER BY id DESC LIMIT ?4;

-- name: list_requests
SELECT at, ip, method, path, workflow, status, reason, body_size, duration_ms, request_id, execution
FROM requests WHERE (?1 IS NULL OR at <= ?1) ORDER BY seq DESC LIMIT ?2;

-- name: intake_newest
SELECT deliveries FROM intake WHERE (?1 IS NULL OR first_at <= ?1) ORDER BY seq DESC LIMIT ?2;

-- name: purge_pick
-- The next finished executions created before the cut (?2), oldest first: a walk of the primary
-- key up to the first id of that millisecond (?1), ids being time-ordered.
SELECT id FROM executions WHERE id < ?1 AND created_at < ?2 AND status NOT IN ('queued', 'started')
ORDER BY id LIMIT ?3;

-- name: purge_jobs
DELETE FROM jobs WHERE execution IN ({ids});

-- name: purge_executions
DELETE FROM executions WHERE id IN ({ids});

-- name: purge_intake
-- The newest batch always stays: a new row is numbered after the highest one left, and in an
-- emptied table that would be 1, at or below the claim cursor, never to be claimed.
DELETE FROM intake WHERE seq IN (
    SELECT seq FROM intake WHERE seq <= (SELECT claimed_seq FROM claims WHERE id = 1) AND first_at < ?1
      AND seq < (SELECT max(seq) FROM intake)
      AND seq NOT IN (SELECT intake_seq FROM executions INDEXED BY executions_pending
                      WHERE status IN ('queued', 'started'))
    ORDER BY seq LIMIT ?2);

-- name: purge_requests
DELETE FROM requests WHERE seq IN (SELECT seq FROM requests WHERE at < ?1 ORDER BY seq LIMIT ?2);

-- name: purge_dedup
-- Expired keys in one slice of the hash space (the primary key): a purge walks the slices, so
-- no transaction scans the whole table and the claim's inserts pay for no second index.
DELETE FROM dedup WHERE hash BETWEEN ?1 AND ?2 AND expires_at < ?3;

-- name: insert_job
INSERT INTO jobs (execution, position, node, type, status, result, error, logs, duration_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: table_columns
SELECT name FROM pragma_table_info(?);

-- name: stored_workflows
SELECT key, definition FROM stored_workflows ORDER BY key;

-- name: create_workflow
INSERT INTO stored_workflows (key, definition, created_at, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (key) DO NOTHING;

-- name: replace_workflow
UPDATE stored_workflows SET definition = ?, updated_at = ? WHERE key = ?;

-- name: delete_workflow
DELETE FROM stored_workflows WHERE key = ?;

-- name: workflows_signature
SELECT count(*), coalesce(max(updated_at), 0), coalesce(sum(length(key) * updated_at), 0) FROM stored_workflows;

-- name: take_replay_key
INSERT INTO replay_keys (key, answer, created_at) VALUES (?, NULL, ?) ON CONFLICT (key) DO NOTHING;

-- name: replay_key
SELECT answer FROM replay_keys WHERE key = ?;

-- name: answer_replay_key
UPDATE replay_keys SET answer = ? WHERE key = ?;

-- name: release_replay_key
DELETE FROM replay_keys WHERE key = ? AND answer IS NULL;

-- name: forget_replay_keys
DELETE FROM replay_keys WHERE created_at < ?;

-- name: replay_candidates
-- A bulk replay's executions, oldest first, of every workflow: a range of the primary key (ids
-- are time-ordered); the statuses are a JSON list.
SELECT id, intake_seq, intake_index FROM executions
WHERE id >= ?2 AND id < ?3 AND status IN (SELECT value FROM json_each(?1))
ORDER BY id LIMIT ?4;

-- name: replay_candidates_of_workflow
-- The same of one workflow: a range of executions_by_workflow.
SELECT id, intake_seq, intake_index FROM executions INDEXED BY executions_by_workflow
WHERE workflow = ?1 AND id >= ?3 AND id < ?4 AND status IN (SELECT value FROM json_each(?2))
ORDER BY id LIMIT ?5;

-- name: intake_scan
-- The stored requests newest first, a page of batches at a time, from those made before an id.
SELECT seq, deliveries FROM intake WHERE (?1 IS NULL OR first_id < ?1) AND (?2 IS NULL OR seq < ?2)
ORDER BY seq DESC LIMIT ?3;
