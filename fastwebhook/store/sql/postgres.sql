-- name: migration_1
-- The log-first intake, as on SQLite, for several hosts: an intake batch is claimed whole, under
-- FOR UPDATE SKIP LOCKED (`claimed` marks it), and leases are timed by the database's clock.
CREATE TABLE intake (
    seq          BIGSERIAL PRIMARY KEY,
    first_id     BYTEA NOT NULL,
    last_id      BYTEA NOT NULL,
    first_at     DOUBLE PRECISION NOT NULL,
    count        INTEGER NOT NULL,
    deliveries   BYTEA NOT NULL,
    claimed      BOOLEAN NOT NULL DEFAULT false,
    held_by      TEXT              -- the owner whose sync senders wait for some of these
);
CREATE INDEX intake_unclaimed ON intake (seq) WHERE NOT claimed;
CREATE TABLE executions (
    id           BYTEA PRIMARY KEY,
    workflow     TEXT NOT NULL,
    version      TEXT NOT NULL,
    status       TEXT NOT NULL,
    dedup_key    TEXT,
    duplicate_of BYTEA,
    created_at   DOUBLE PRECISION NOT NULL,
    started_at   DOUBLE PRECISION,
    finished_at  DOUBLE PRECISION,
    owner        TEXT,
    lease_until  DOUBLE PRECISION,
    attempts     INTEGER NOT NULL DEFAULT 1,
    error        TEXT,
    intake_seq   BIGINT NOT NULL,
    intake_index INTEGER NOT NULL
);
CREATE INDEX executions_pending ON executions (id) WHERE status IN ('queued', 'started');
CREATE INDEX executions_by_workflow ON executions (workflow, id);
CREATE TABLE dedup (
    hash        BIGINT PRIMARY KEY,
    execution   BYTEA NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE jobs (
    seq          BIGSERIAL PRIMARY KEY,
    execution    BYTEA NOT NULL,
    position     INTEGER NOT NULL,
    node         TEXT NOT NULL,
    type         TEXT NOT NULL,
    status       TEXT NOT NULL,
    result       BYTEA,
    error        TEXT,
    logs         BYTEA,
    duration_ms  DOUBLE PRECISION NOT NULL
);
CREATE INDEX jobs_by_execution ON jobs (execution, position);
CREATE TABLE requests (
    seq          BIGSERIAL PRIMARY KEY,
    at           DOUBLE PRECISION NOT NULL,
    ip           TEXT NOT NULL,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    workflow     TEXT,
    status       INTEGER NOT NULL,
    reason       TEXT,
    body_size    INTEGER NOT NULL,
    duration_ms  DOUBLE PRECISION NOT NULL,
    request_id   TEXT NOT NULL,
    execution    BYTEA
);
CREATE TABLE stored_workflows (
    key          TEXT PRIMARY KEY,
    definition   BYTEA NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL
);
-- store/rows.py's TRANSITIONS, written at every start (they may change with the code).
CREATE TABLE transitions (before TEXT NOT NULL, after TEXT NOT NULL, PRIMARY KEY (before, after));

-- name: migration_2
-- Bulk replays' Idempotency-Key headers and their first answers (NULL while that replay runs),
-- kept for [storage] retention.
CREATE TABLE replay_keys (
    key          TEXT PRIMARY KEY,
    answer       BYTEA,
    created_at   DOUBLE PRECISION NOT NULL
);

-- name: migration_3
-- Intake blobs compressed with LZ4 instead of pglz: storing a batch of 64 webhooks (~100 KB) cost
-- the database ~650 us of CPU with pglz and ~260 us with LZ4, which also decompresses faster for
-- a claim that reads one back (docs/benchmarks.md). Rows stored before keep theirs. A server
-- built without LZ4, or older than 14 (no SET COMPRESSION), keeps pglz.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE intake ALTER COLUMN deliveries SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    NULL;
END $$;

-- name: schema_versions
CREATE TABLE IF NOT EXISTS schema_versions (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());

-- name: schema_version
SELECT coalesce(max(version), 0) FROM schema_versions;

-- name: record_version
INSERT INTO schema_versions (version) VALUES ($1);

-- name: append
-- One round trip: the batch's row, and a hint to idle hosts (LISTEN/NOTIFY; they poll anyway).
WITH appended AS (
    INSERT INTO intake (first_id, last_id, first_at, count, deliveries, held_by) VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING seq)
SELECT seq, pg_notify('fastwebhook_intake', '') FROM appended;

-- name: append_unless_held
-- The append of a batch some of whose dedup keys ($8) another process or host may have taken, in
-- one round trip: the batch's row only if none of them is held for a live execution; else the
-- held ones (hash, execution) and nothing appended.
WITH held AS (
    SELECT hash, execution FROM dedup WHERE expires_at > $7 AND hash = ANY($8::bigint[])),
appended AS (
    INSERT INTO intake (first_id, last_id, first_at, count, deliveries, held_by)
    SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT FROM held)
    RETURNING seq)
SELECT seq, NULL::bigint AS hash, NULL::bytea AS execution FROM appended, pg_notify('fastwebhook_intake', '')
UNION ALL
SELECT NULL, hash, execution FROM held;

-- name: find_dedup
SELECT hash, execution FROM dedup WHERE expires_at > $1 AND hash = ANY($2::bigint[]);

-- name: claim_sizes
-- The oldest unclaimed batches and their sizes (deliveries; bytes, read from the stored value's
-- header, never decompressed), unlocked (the claim then locks as many as it takes); one that a
-- sync sender waits for is its host's ($2), unless it has waited past the cut ($3: that host
-- is gone).
SELECT seq, count, octet_length(deliveries) FROM intake
WHERE NOT claimed AND seq > $4 AND (held_by IS NULL OR held_by = $2 OR first_at < $3)
ORDER BY seq LIMIT $1;

-- name: claim_pick
-- Those of them no other host is claiming right now (the blobs of those this host still holds,
-- $2, are not sent again).
SELECT seq, CASE WHEN seq = ANY($2::bigint[]) THEN NULL ELSE deliveries END FROM intake
WHERE seq = ANY($1::bigint[]) AND NOT claimed
ORDER BY seq FOR UPDATE SKIP LOCKED;

-- name: claim_keys
-- Each staged key into the unique index, or, held by a live execution, left to it; either way
-- the holder comes back, in one pass over the index (a key another host is taking this moment
-- is waited for, then its holder returned), in the keys' order on every host, so no two claims
-- wait on each other in a ring.  Keys expire by the claim's time ($1): their expiry times are
-- the hosts' (received + ttl).
INSERT INTO dedup (hash, execution, expires_at)
SELECT hash, execution, expires_at FROM pg_temp.claim_keys ORDER BY hash
ON CONFLICT (hash) DO UPDATE SET
    execution = CASE WHEN dedup.expires_at <= $1 THEN excluded.execution ELSE dedup.execution END,
    expires_at = CASE WHEN dedup.expires_at <= $1 THEN excluded.expires_at ELSE dedup.expires_at END
RETURNING hash, execution;

-- name: claim_staging
-- The claim's keys and rows, staged on its connection by COPY (made once a connection): asyncpg
-- sends COPY's rows value by value in C, where an array parameter costs a Python call a value.
CREATE TEMP TABLE IF NOT EXISTS claim_keys (
    hash BIGINT, execution BYTEA, expires_at DOUBLE PRECISION
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS claiming (
    id BYTEA, workflow TEXT, version TEXT, status TEXT, dedup_key TEXT, duplicate_of BYTEA,
    created_at DOUBLE PRECISION, intake_seq BIGINT, intake_index INTEGER
) ON COMMIT DELETE ROWS;

-- name: claim_insert
-- Every staged delivery's row; a lease (queued) timed by the database's clock, $1 seconds long.
INSERT INTO executions (id, workflow, version, status, dedup_key, duplicate_of, created_at, started_at,
                        finished_at, owner, lease_until, intake_seq, intake_index)
SELECT id, workflow, version, status, dedup_key, duplicate_of, created_at,
       CASE WHEN status != 'queued' THEN extract(epoch FROM clock_timestamp()) END,
       CASE WHEN status != 'queued' THEN extract(epoch FROM clock_timestamp()) END,
       CASE WHEN status = 'queued' THEN $2 END,
       CASE WHEN status = 'queued' THEN extract(epoch FROM clock_timestamp()) + $1 END,
       intake_seq, intake_index
FROM pg_temp.claiming
ON CONFLICT (id) DO NOTHING;

-- name: claim_mark
UPDATE intake SET claimed = true WHERE seq = ANY($1::bigint[]);

-- name: intake_batch
SELECT deliveries FROM intake WHERE seq = $1;

-- name: reclaim
UPDATE executions SET owner = $1, lease_until = extract(epoch FROM clock_timestamp()) + $2,
       attempts = attempts + 1
WHERE id IN (
    SELECT id FROM executions
    WHERE status IN ('queued', 'started')
      AND (lease_until < extract(epoch FROM clock_timestamp()) OR owner = ANY($3::text[]))
    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
RETURNING intake_seq, intake_index, attempts;

-- name: reclaimable
SELECT 1 FROM executions
WHERE status IN ('queued', 'started')
  AND (lease_until < extract(epoch FROM clock_timestamp()) OR owner = ANY($1::text[])) LIMIT 1;

-- name: pending_owners
SELECT DISTINCT owner FROM executions WHERE status IN ('queued', 'started') AND owner IS NOT NULL;

-- name: renew
UPDATE executions SET lease_until = extract(epoch FROM clock_timestamp()) + $1
WHERE owner = $2 AND status IN ('queued', 'started');

-- name: record_apply
-- One statement, one round trip: the status changes the transition table allows, the jobs,
-- the request-log lines.
WITH finals AS (
    UPDATE executions e SET status = f.status, started_at = coalesce(e.started_at, f.started_at),
           finished_at = f.finished_at, error = f.error,
           owner = CASE WHEN f.status = 'started' THEN e.owner END,
           lease_until = CASE WHEN f.status = 'started' THEN e.lease_until END
    FROM unnest($1::bytea[], $2::text[], $3::float8[], $4::float8[], $5::text[])
         AS f(id, status, started_at, finished_at, error)
    WHERE e.id = f.id AND EXISTS (SELECT 1 FROM transitions t WHERE t.before = e.status AND t.after = f.status)
    RETURNING 1),
new_jobs AS (
    INSERT INTO jobs (execution, position, node, type, status, result, error, logs, duration_ms)
    SELECT * FROM unnest($6::bytea[], $7::int[], $8::text[], $9::text[], $10::text[], $11::bytea[],
                         $12::text[], $13::bytea[], $14::float8[])
    RETURNING 1),
new_requests AS (
    INSERT INTO requests (at, ip, method, path, workflow, status, reason, body_size, duration_ms, request_id, execution)
    SELECT * FROM unnest($15::float8[], $16::text[], $17::text[], $18::text[], $19::text[], $20::int[],
                         $21::text[], $22::int[], $23::float8[], $24::text[], $25::bytea[])
    RETURNING 1)
SELECT (SELECT count(*) FROM finals), (SELECT count(*) FROM new_jobs), (SELECT count(*) FROM new_requests);

-- name: alerts_apply
-- Failure workflows' deliveries ($2: ids, $3: received at, $4: blobs), each an intake batch of
-- its own, for those of their failed executions ($1) still pending: this transaction's
-- record_apply then makes them final.  A row another host is making final is waited for (FOR
-- UPDATE), then seen final and left out.  Each appended one's id comes back.
WITH pending AS (
    SELECT id FROM executions WHERE id = ANY($1::bytea[]) AND status IN ('queued', 'started')
    FOR UPDATE),
appended AS (
    INSERT INTO intake (first_id, last_id, first_at, count, deliveries)
    SELECT a.id, a.id, a.at, 1, a.deliveries
    FROM unnest($1::bytea[], $2::bytea[], $3::float8[], $4::bytea[]) WITH ORDINALITY AS a(failed, id, at, deliveries, n)
    WHERE a.failed IN (SELECT id FROM pending)
    ORDER BY a.n
    RETURNING first_id)
SELECT first_id, pg_notify('fastwebhook_intake', '') FROM appended;

-- name: pending_by_workflow
SELECT workflow, count(*) FROM executions WHERE status IN ('queued', 'started') GROUP BY workflow;

-- name: unfinished
SELECT (SELECT coalesce(sum(count), 0) FROM intake WHERE NOT claimed)::bigint,
       (SELECT count(*) FROM executions WHERE status IN ('queued', 'started'));

-- name: live_dedup
SELECT hash, execution, expires_at FROM dedup WHERE expires_at > $1 ORDER BY expires_at DESC LIMIT $2;

-- name: unclaimed_newest
SELECT seq, deliveries FROM intake WHERE NOT claimed AND ($1::bytea IS NULL OR first_id < $1)
ORDER BY seq DESC LIMIT $2;

-- name: intake_holding
SELECT seq, first_id, deliveries FROM intake WHERE last_id >= $1 AND first_id <= $1 ORDER BY seq DESC LIMIT 8;

-- name: get_execution
SELECT id, workflow, version, status, dedup_key, duplicate_of, created_at, started_at, finished_at,
       attempts, error, intake_seq, intake_index
FROM executions WHERE id = $1;

-- name: get_jobs
SELECT execution, position, node, type, status, result, error, logs, duration_ms
FROM jobs WHERE execution = $1 ORDER BY position;

-- name: list_executions
SELECT id, workflow, version, status, dedup_key, duplicate_of, created_at, started_at, finished_at,
       attempts, error, intake_seq, intake_index
FROM executions
WHERE ($1::text IS NULL OR workflow = $1) AND ($2::text IS NULL OR status = $2) AND ($3::bytea IS NULL OR id < $3)
ORDER BY id DESC LIMIT $4;

-- name: list_requests
SELECT at, ip, method, path, workflow, status, reason, body_size, duration_ms, request_id, execution
FROM requests WHERE ($1::float8 IS NULL OR at <= $1) ORDER BY seq DESC LIMIT $2;

-- name: intake_newest
SELECT deliveries FROM intake WHERE ($1::float8 IS NULL OR first_at <= $1) ORDER BY seq DESC LIMIT $2;

-- name: purge_pick
SELECT id FROM executions WHERE id < $1 AND created_at < $2 AND status NOT IN ('queued', 'started')
ORDER BY id LIMIT $3;

-- name: purge_jobs
DELETE FROM jobs WHERE execution = ANY($1::bytea[]);

-- name: purge_executions
DELETE FROM executions WHERE id = ANY($1::bytea[]);

-- name: purge_intake
DELETE FROM intake WHERE seq IN (
    SELECT seq FROM intake WHERE claimed AND first_at < $1
      AND seq NOT IN (SELECT intake_seq FROM executions WHERE status IN ('queued', 'started'))
    ORDER BY seq LIMIT $2);

-- name: purge_requests
DELETE FROM requests WHERE seq IN (SELECT seq FROM requests WHERE at < $1 ORDER BY seq LIMIT $2);

-- name: purge_dedup
DELETE FROM dedup WHERE hash BETWEEN $1 AND $2 AND expires_at < $3;

-- name: stored_workflows
SELECT key, definition FROM stored_workflows ORDER BY key;

-- name: create_workflow
INSERT INTO stored_workflows (key, definition, created_at, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO NOTHING;

-- name: replace_workflow
UPDATE stored_workflows SET definition = $1, updated_at = $2 WHERE key = $3;

-- name: delete_workflow
DELETE FROM stored_workflows WHERE key = $1;

-- name: workflows_signature
SELECT count(*), coalesce(max(updated_at), 0), coalesce(sum(length(key) * updated_at), 0) FROM stored_workflows;

-- name: insert_job
INSERT INTO jobs (execution, position, node, type, status, result, error, logs, duration_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: table_columns
SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1;

-- name: take_replay_key
INSERT INTO replay_keys (key, answer, created_at) VALUES ($1, NULL, $2) ON CONFLICT (key) DO NOTHING;

-- name: replay_key
SELECT answer FROM replay_keys WHERE key = $1;

-- name: answer_replay_key
UPDATE replay_keys SET answer = $1 WHERE key = $2;

-- name: release_replay_key
DELETE FROM replay_keys WHERE key = $1 AND answer IS NULL;

-- name: forget_replay_keys
DELETE FROM replay_keys WHERE created_at < $1;

-- name: replay_candidates
-- A bulk replay's executions, oldest first, of every workflow: a range of the primary key (ids
-- are time-ordered).
SELECT id, intake_seq, intake_index FROM executions
WHERE id >= $2 AND id < $3 AND status = ANY($1::text[])
ORDER BY id LIMIT $4;

-- name: replay_candidates_of_workflow
-- The same of one workflow: a range of executions_by_workflow.
SELECT id, intake_seq, intake_index FROM executions
WHERE workflow = $1 AND id >= $3 AND id < $4 AND status = ANY($2::text[])
ORDER BY id LIMIT $5;

-- name: intake_scan
-- The stored requests newest first, a page of batches at a time, from those made before an id.
SELECT seq, deliveries FROM intake WHERE ($1::bytea IS NULL OR first_id < $1) AND ($2::bigint IS NULL OR seq < $2)
ORDER BY seq DESC LIMIT $3;
