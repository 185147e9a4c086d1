-- Every statement that changes a job's state, each whole and by name.
--
-- jobs/queue/sql.py loads this file once and hands out the blocks by the
-- name after "-- name:". Parameters are psycopg's %(name)s. Statuses are
-- written as literals wherever an index's condition names them: only then
-- can PostgreSQL match the partial index.
--
-- The state a worker may write to is guarded everywhere by the same test,
--     j.id = c.id AND j.lease_token = c.token AND (j.status IN ('claimed', 'running')) IS TRUE
-- so a worker that lost a job (cancelled, or rescued after it stalled)
-- changes nothing. IS TRUE means the same in a WHERE, but keeps the planner
-- from matching the status test to job_held_lease_idx. That index still
-- holds an entry for every job that left `claimed`/`running` since the last
-- vacuum, and the plan it invites (a bitmap scan of all of them, hashed
-- against the batch) costs more with every job finished: 5 ms instead of
-- 1 ms per 110 completions after 16k jobs. Each row is found by its
-- primary key instead.
--
-- A held job has started when started_at is set: `claimed` jobs have none.
-- A write that finishes a job whose start the worker has not written yet
-- (it ran and ended between two ticks) counts the attempt and sets the
-- start itself, from `ago` or `run_s`, the seconds since its slot started
-- it, so a short job costs a claim and a completion and nothing more.
--
-- Each write also counts what it did, in the same statement: JobCounter
-- rows for the Prometheus counters and histograms, FinishedCount rows for
-- the throughput chart (see jobs.counters). A change and its count commit
-- or roll back together. A histogram value goes to the smallest bound of
-- %(buckets)s (jobs.counters.BUCKETS) that holds it.


-- name: insert_job
-- One job, its count and the NOTIFY that wakes the workers (sent at commit,
-- for a job due now): one statement, one round trip. The NOTIFY's payload
-- is the queue's name, with ":k" after it for a job with a concurrency key
-- (only the limited claim takes those), or ":p" and the priority for a job
-- of a priority other than the named ones, which workers claim only once
-- they know of it (jobs.worker.producer.ClaimFront): that one is sent even
-- for a job due later, %(notify)s. It reads no table, so its prepared
-- generic plan fits any table (jobs.db).
WITH inserted AS (
    INSERT INTO jobs_job (owner_id, queue, type, payload, priority, status, attempts, max_retries, run_at,
                          timeout, expires_at, unique_key, idempotency_key, trace_id, created_at, error, history,
                          progress, concurrency_key, key_limit)
    VALUES (%(owner)s, %(queue)s, %(type)s, %(payload)s::jsonb, %(priority)s, %(status)s, 0, %(max_retries)s,
            coalesce(%(run_at)s, statement_timestamp()), %(timeout)s, %(expires_at)s, %(unique_key)s,
            %(idempotency_key)s, %(trace_id)s, statement_timestamp(), '', '[]'::jsonb, 0, %(key)s, %(key_limit)s)
    RETURNING id, run_at, created_at
), counted AS (
    INSERT INTO jobs_jobcounter (name, type, queue, value)
    SELECT 'enqueued', %(type)s, %(queue)s, count(*) FROM inserted
)
SELECT id, run_at, created_at, (SELECT pg_notify(%(channel)s, %(wake)s) WHERE %(notify)s) FROM inserted;


-- name: insert_jobs
-- One job per payload of %(payloads)s (a text[] of JSON documents), in
-- their order, counted, with one NOTIFY for all of them: NOTIFY takes a
-- global lock at commit. %(keys)s gives each job its concurrency key, in
-- the same order; NULL for none (unnest pads a shorter array with NULLs).
WITH inserted AS (
    INSERT INTO jobs_job (owner_id, queue, type, payload, priority, status, attempts, max_retries, run_at,
                          timeout, expires_at, unique_key, idempotency_key, trace_id, created_at, error, history,
                          progress, concurrency_key, key_limit)
    SELECT %(owner)s, %(queue)s, %(type)s, p::jsonb, %(priority)s, %(status)s, 0, %(max_retries)s,
           coalesce(%(run_at)s, statement_timestamp()), %(timeout)s, %(expires_at)s, %(unique_key)s,
           %(idempotency_key)s, %(trace_id)s, statement_timestamp(), '', '[]'::jsonb, 0,
           k, CASE WHEN k IS NOT NULL THEN %(key_limit)s::integer END
    FROM unnest(%(payloads)s::text[], %(keys)s::text[]) WITH ORDINALITY AS u(p, k, n)
    ORDER BY n
    RETURNING id, run_at, created_at
), counted AS (
    INSERT INTO jobs_jobcounter (name, type, queue, value)
    SELECT 'enqueued', %(type)s, %(queue)s, count(*) FROM inserted HAVING count(*) > 0
)
SELECT id, run_at, created_at, (SELECT pg_notify(%(channel)s, %(wake)s) WHERE %(notify)s)
FROM inserted ORDER BY id;


-- name: insert_jobs_capped
-- insert_jobs, but nothing at all if the owner's unfinished jobs and these
-- would be more than %(max_active)s. A statement of its own rather than an
-- optional part of insert_jobs: a cap given as NULL, and so planned away,
-- still cost 13 % of the uncapped insert's time. It reads the owner's jobs
-- (job_owner_status_idx), so it is planned afresh each time.
WITH inserted AS (
    INSERT INTO jobs_job (owner_id, queue, type, payload, priority, status, attempts, max_retries, run_at,
                          timeout, expires_at, unique_key, idempotency_key, trace_id, created_at, error, history,
                          progress, concurrency_key, key_limit)
    SELECT %(owner)s, %(queue)s, %(type)s, p::jsonb, %(priority)s, %(status)s, 0, %(max_retries)s,
           coalesce(%(run_at)s, statement_timestamp()), %(timeout)s, %(expires_at)s, %(unique_key)s,
           %(idempotency_key)s, %(trace_id)s, statement_timestamp(), '', '[]'::jsonb, 0,
           k, CASE WHEN k IS NOT NULL THEN %(key_limit)s::integer END
    FROM unnest(%(payloads)s::text[], %(keys)s::text[]) WITH ORDINALITY AS u(p, k, n)
    WHERE (
        SELECT count(*) FROM (
            SELECT 1 FROM jobs_job
            WHERE owner_id = %(owner)s
              AND status IN ('queued', 'scheduled', 'retrying', 'claimed', 'running')
            LIMIT greatest(%(max_active)s::integer, 0)
        ) AS unfinished
    ) + %(adding)s::integer <= %(max_active)s::integer
    ORDER BY n
    RETURNING id, run_at, created_at
), counted AS (
    INSERT INTO jobs_jobcounter (name, type, queue, value)
    SELECT 'enqueued', %(type)s, %(queue)s, count(*) FROM inserted HAVING count(*) > 0
)
SELECT id, run_at, created_at, (SELECT pg_notify(%(channel)s, %(wake)s) WHERE %(notify)s)
FROM inserted ORDER BY id;


-- name: ready_priorities
-- The priorities of the jobs claim_jobs takes (ready, or waiting to be,
-- without a concurrency key), highest first: a skip scan of job_claim_idx,
-- one index probe per priority however many jobs each has. A worker reads
-- them when it sweeps (jobs.worker.producer.ClaimFront) and claims over
-- those, the named ones and any a NOTIFY named since. The probes go up
-- from the lowest priority: the index holds priorities highest first, so
-- that is a backward scan, which meets each priority at its newest run_at,
-- where the entries are live. The dead ones that claims leave behind sit
-- at a priority's other end, its oldest run_at, which a forward probe
-- (ORDER BY priority DESC) would walk through first.
WITH RECURSIVE present AS (
    (SELECT priority FROM jobs_job
     WHERE status IN ('queued', 'scheduled', 'retrying') AND concurrency_key IS NULL
     ORDER BY priority LIMIT 1)
    UNION ALL
    SELECT (SELECT j.priority FROM jobs_job AS j
            WHERE j.status IN ('queued', 'scheduled', 'retrying') AND j.concurrency_key IS NULL
              AND j.priority > p.priority
            ORDER BY j.priority LIMIT 1)
    FROM present AS p WHERE p.priority IS NOT NULL
)
SELECT coalesce(array_agg(priority ORDER BY priority DESC) FILTER (WHERE priority IS NOT NULL), '{}') FROM present;


-- name: claim_jobs
-- Claim up to %(limit)s ready jobs for worker %(worker)s, highest priority
-- first, the oldest run_at first within a priority. The first %(start)s of
-- them start at once (a slot is free for each): `running`, their attempt
-- counted, started now. The rest are `claimed`: held, leased, waiting in
-- the worker for a slot, with no attempt counted and no start.
--
-- %(priorities)s are the priorities to read, highest first (the worker's
-- ClaimFront knows which are present), and %(fronts)s where each starts
-- (an epoch second): a claim reads a priority from just before the newest
-- job of it claimed so far, not through the dead index entries claims
-- left in front of that. Each priority is one index range scan on
-- job_claim_idx (priority = p AND run_at >= front, in run_at order), in a
-- LATERAL per element of the arrays. The nested loop returns each
-- priority's jobs in the order of the arrays, and the LIMIT stops it as
-- soon as the claim is full: a priority after that is not read at all,
-- and nothing is locked that is not claimed. No ORDER BY on top: sorting
-- would run every priority's scan to its own LIMIT first, locking up to
-- %(limit)s rows of each. `picked` is MATERIALIZED so PostgreSQL runs it
-- exactly once: inlined into the UPDATE, a LIMITed FOR UPDATE sub-select
-- may be re-run and claim more than `limit` rows (PG bug #15715). Rows
-- other transactions hold locked are skipped, not waited for, so any
-- number of workers claim at once without blocking each other or claiming
-- a row twice.
--
-- The chosen ids are matched as an array, in picked's order, so the first
-- %(start)s, the highest, are the ones that start, and whatever the row
-- estimates the UPDATE finds each by its primary key. As a join against
-- the sub-selects it could hash the whole table: a generic plan, which
-- cannot know `limit`, guesses a tenth of the queue, and with a deep queue
-- that hash spilled to disk.
--
-- Flow control (claim_limited_jobs claims the rest): only jobs without a
-- concurrency key, the condition of job_claim_idx, and none of a queue that
-- is paused or has a limit of its own. The scans skip the queues the worker
-- knows to be controlled, %(controlled)s, and `chosen` drops the jobs of
-- any queue controlled now (`controlled` reads the few rows of
-- jobs_queuecontrol once), so a pause the worker has not heard of yet holds
-- too. The scans cannot read the table's rows instead: the planner does not
-- know what they hold, and for `queue <> ALL(<unknown array>)` it assumes
-- ten queue names. Where every job is in one queue, as is common, ANALYZE
-- records one name, and that estimate says no job passes: the scan became
-- a sequential scan of the whole table (20 ms at 20,000 rows). With the
-- names given, most often none, the estimate is the table's.
WITH controlled AS MATERIALIZED (
    SELECT ARRAY(SELECT name FROM jobs_queuecontrol
                 WHERE paused OR concurrency IS NOT NULL OR rate_limit IS NOT NULL) AS names
), picked AS MATERIALIZED (
    SELECT c.id, c.queue
    FROM unnest(%(priorities)s::smallint[], %(fronts)s::float8[]) AS f(priority, front)
    CROSS JOIN LATERAL (
        SELECT id, queue FROM jobs_job
        WHERE status IN ('queued', 'scheduled', 'retrying') AND run_at <= statement_timestamp()
          AND (expires_at IS NULL OR expires_at > statement_timestamp())
          AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
          AND concurrency_key IS NULL AND queue <> ALL(%(controlled)s::text[])
          AND priority = f.priority AND run_at >= to_timestamp(f.front)
        ORDER BY run_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS c
    LIMIT %(limit)s
), chosen AS MATERIALIZED (
    SELECT ids, ids[1:%(start)s] AS starting
    FROM (SELECT ARRAY(SELECT id FROM picked WHERE queue <> ALL((SELECT names FROM controlled)::text[])) AS ids) AS a
)
UPDATE jobs_job AS j
SET status = CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN 'running' ELSE 'claimed' END,
    attempts = j.attempts + CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN 1 ELSE 0 END,
    started_at = CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN statement_timestamp() END,
    leased_by = %(worker)s, lease_token = gen_random_uuid(),
    lease_expires_at = statement_timestamp() + make_interval(secs => %(lease)s),
    finished_at = NULL, progress = 0
WHERE j.id = ANY((SELECT ids FROM chosen)::bigint[])
RETURNING j.id, j.type, j.payload, j.attempts, j.max_retries, j.timeout, j.trace_id, j.queue, j.lease_token,
          j.owner_id, j.priority, extract(epoch FROM j.run_at)::float8, j.status = 'running';


-- name: lock_limited_claims
-- Limited claims take turns, cluster-wide: each counts what is held and
-- started, then claims within what is left, and two at once would both see
-- the same room. Held until the claim's transaction ends. A statement of
-- its own: under READ COMMITTED the claim that follows sees every claim
-- committed before this lock was granted, which one statement would not.
--
-- It also turns JIT compilation off for the claim's transaction. The
-- planner compiles a statement whose estimated cost passes jit_above_cost,
-- and claim_limited_jobs passes it with a few hundred held jobs: its
-- estimate for jobs_queuecontrol, a table of a few rows that autovacuum
-- never analyzes, is 360 rows, each counting held jobs. Compiling cost
-- 90-250 ms a claim where the claim itself runs in 7 ms.
SELECT pg_advisory_xact_lock(%(lock)s), set_config('jit', 'off', true);


-- name: try_lock_limited_claims
-- lock_limited_claims, unless another claim holds it: then false at once,
-- and a worker with jobs still to run tries again later instead of waiting.
-- JIT is off for the transaction either way (a refused claim runs nothing).
SELECT pg_try_advisory_xact_lock(%(lock)s), set_config('jit', 'off', true);


-- name: claim_keyed_jobs
-- The limited claim's fast path, for the common case: keyed jobs whose
-- keys have concurrency limits only (no rate), in queues with no limit or
-- pause of their own. Under lock_limited_claims, as claim_limited_jobs.
--
-- claim_limited_jobs finds every waiting key (one probe each) and reads
-- each key's jobs (one more probe each), and each probe first steps over
-- the key's index entries of jobs already gone, until VACUUM removes them:
-- with 100 keys, 7-14 ms a claim in a drain. This one reads the first
-- %(window)s keyed jobs in claim order instead (on job_keyed_claim_idx)
-- and takes each in turn while its key has room: first come, first served
-- among keys with room. It cannot see a key with no job in the window, nor
-- the jobs of a rated key or of a controlled queue, and the worker knows
-- it: it returns `keys_read`, the keys the window held, and the worker
-- runs claim_limited_jobs when fewer keys than wait (flow_state) left it
-- short, when flow control has rates or controlled queues for it, and once
-- a second.
--
-- The window is read without locks: no other limited claim runs meanwhile,
-- and the plain claim takes no keyed job. The rows picked are then locked
-- SKIP LOCKED with their status checked again (a user may have cancelled
-- one).
WITH RECURSIVE controlled AS MATERIALIZED (
    SELECT ARRAY(SELECT name FROM jobs_queuecontrol
                 WHERE paused OR concurrency IS NOT NULL OR rate_limit IS NOT NULL) AS names
), present AS (
    -- The priorities keyed jobs wait at: a skip scan of job_keyed_claim_idx,
    -- one probe per priority, going up from the lowest as ready_priorities
    -- does (which says why).
    (SELECT priority FROM jobs_job
     WHERE status IN ('queued', 'scheduled', 'retrying') AND concurrency_key IS NOT NULL
     ORDER BY priority LIMIT 1)
    UNION ALL
    SELECT (SELECT j.priority FROM jobs_job AS j
            WHERE j.status IN ('queued', 'scheduled', 'retrying') AND j.concurrency_key IS NOT NULL
              AND j.priority > p.priority
            ORDER BY j.priority LIMIT 1)
    FROM present AS p WHERE p.priority IS NOT NULL
), candidates AS MATERIALIZED (
    -- The window: per priority, highest first, one range scan of
    -- job_keyed_claim_idx in run_at order, as claim_jobs reads job_claim_idx,
    -- and the LIMIT stops the nested loop once the window is full. (One scan
    -- of the whole index in claim order looked the same to the planner as a
    -- bitmap scan of every keyed job sorted, and that it took: 19 ms at
    -- 20,000 jobs.) The queues the worker knows to be controlled are skipped
    -- as in claim_jobs (which says why), and those controlled now dropped.
    SELECT c.* FROM (SELECT priority FROM present WHERE priority IS NOT NULL ORDER BY priority DESC) AS pr
    CROSS JOIN LATERAL (
        SELECT id, queue, concurrency_key AS key, key_limit, priority, run_at FROM jobs_job
        WHERE status IN ('queued', 'scheduled', 'retrying') AND run_at <= statement_timestamp()
          AND (expires_at IS NULL OR expires_at > statement_timestamp())
          AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
          AND concurrency_key IS NOT NULL AND queue <> ALL(%(controlled)s::text[])
          AND priority = pr.priority
        ORDER BY run_at, id LIMIT %(window)s
    ) AS c
    WHERE c.queue <> ALL((SELECT names FROM controlled)::text[])
    LIMIT %(window)s
), held_keys AS MATERIALIZED (
    SELECT queue, concurrency_key AS key, count(*) AS held FROM jobs_job
    WHERE status IN ('claimed', 'running') AND concurrency_key IS NOT NULL
    GROUP BY queue, concurrency_key
), keys AS MATERIALIZED (
    -- Each key the window read: its room (its KeyLimit row, else its
    -- type's, else its queue's, less what it holds; NULL: no limit), and
    -- whether a rate applies to it. An owner's key counts across queues.
    SELECT c.queue, c.key, coalesce(l.rate_limit, q.key_rate_limit) IS NOT NULL AS rated,
           coalesce(l.concurrency, c.key_limit, q.key_concurrency)
           - coalesce(CASE WHEN c.key LIKE 'owner:%%'
                           THEN (SELECT sum(o.held)::bigint FROM held_keys AS o WHERE o.key = c.key)
                           ELSE h.held END, 0) AS room
    FROM (SELECT DISTINCT ON (queue, key) queue, key, key_limit FROM candidates
          ORDER BY queue, key, priority DESC, run_at, id) AS c
    LEFT JOIN jobs_queuecontrol AS q ON q.name = c.queue
    LEFT JOIN jobs_keylimit AS l ON l.queue = c.queue AND l.key = c.key
    LEFT JOIN held_keys AS h ON h.queue = c.queue AND h.key = c.key
), picked AS MATERIALIZED (
    SELECT id, priority, run_at FROM (
        SELECT c.id, c.priority, c.run_at, k.room, k.rated,
               row_number() OVER (PARTITION BY CASE WHEN c.key LIKE 'owner:%%' THEN NULL ELSE c.queue END, c.key
                                  ORDER BY c.priority DESC, c.run_at, c.id) AS n
        FROM candidates AS c JOIN keys AS k ON k.queue = c.queue AND k.key = c.key
    ) AS r
    WHERE NOT rated AND (room IS NULL OR n <= room)
    ORDER BY priority DESC, run_at, id LIMIT %(limit)s
), locked AS MATERIALIZED (
    -- By primary key, one row at a time: matched as an array, the planner
    -- would AND a bitmap of every job of the ready statuses with it.
    SELECT j.id, p.priority, p.run_at FROM picked AS p JOIN jobs_job AS j ON j.id = p.id
    WHERE j.status IN ('queued', 'scheduled', 'retrying')
    FOR UPDATE OF j SKIP LOCKED
), chosen AS MATERIALIZED (
    -- OFFSET 0 keeps the array built once: pulled up, it is built for each use.
    SELECT ids, ids[1:%(start)s] AS starting
    FROM (SELECT ARRAY(SELECT id FROM locked ORDER BY priority DESC, run_at, id) AS ids OFFSET 0) AS a
), claimed AS (
    UPDATE jobs_job AS j
    SET status = CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN 'running' ELSE 'claimed' END,
        attempts = j.attempts + CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN 1 ELSE 0 END,
        started_at = CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN statement_timestamp() END,
        leased_by = %(worker)s, lease_token = gen_random_uuid(),
        lease_expires_at = statement_timestamp() + make_interval(secs => %(lease)s),
        finished_at = NULL, progress = 0
    WHERE j.id = ANY((SELECT ids FROM chosen)::bigint[])
    RETURNING j.id, j.type, j.payload, j.attempts, j.max_retries, j.timeout, j.trace_id, j.queue, j.lease_token,
              j.owner_id, j.priority, extract(epoch FROM j.run_at)::float8, j.status = 'running'
)
-- The claimed jobs with the count of keys read, or that count alone in a row of NULLs.
SELECT c.*, k.keys_read FROM (SELECT count(*) AS keys_read FROM keys) AS k LEFT JOIN claimed AS c ON true;


-- name: claim_limited_jobs
-- Claim up to %(limit)s jobs that flow control applies to, for worker
-- %(worker)s, under lock_limited_claims: jobs with a concurrency key, and
-- the jobs of queues with a limit of their own (jobs_queuecontrol). As in
-- claim_jobs, the first %(start)s start at once and the rest are `claimed`.
--
-- Limits count held jobs (claimed or running), so a job a worker holds for
-- a slot already counts against its key and its queue. A rate counts
-- starts, so a job under one is claimed only to start at once, and its
-- start is logged (jobs_startlog) by this same statement.
--
-- Fairness: each group (a queue's key, or a limited queue's jobs without a
-- key) offers its jobs in their own order, highest priority first, then
-- oldest run_at (job_key_claim_idx and job_claim_idx hold them so), and the
-- claim takes every group's first job before any group's second (`turn`),
-- so one busy key cannot starve the others.
--
-- An owner's key ('owner:<id>', jobs.submission.owner_concurrency) limits
-- one user's jobs in every queue together, or a user who named several
-- queues would hold the limit in each: its held jobs are counted across
-- queues, and its groups share one room (`in_key`).
WITH RECURSIVE keys AS (
    -- Each (queue, key) with a ready job: a skip scan of job_key_claim_idx,
    -- one index probe per key however many jobs it has. The first job's
    -- key_limit is the limit its type gives the key.
    (SELECT queue, concurrency_key AS key, key_limit FROM jobs_job
     WHERE status IN ('queued', 'scheduled', 'retrying') AND concurrency_key IS NOT NULL
       AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
     ORDER BY queue, concurrency_key, priority DESC, run_at, id LIMIT 1)
    UNION ALL
    SELECT n.queue, n.key, n.key_limit FROM keys AS k CROSS JOIN LATERAL (
        SELECT queue, concurrency_key AS key, key_limit FROM jobs_job
        WHERE status IN ('queued', 'scheduled', 'retrying') AND concurrency_key IS NOT NULL
          AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
          AND (queue, concurrency_key) > (k.queue, k.key)
        ORDER BY queue, concurrency_key, priority DESC, run_at, id LIMIT 1
    ) AS n
), queues AS MATERIALIZED (
    -- The controlled queues, with what each holds and started within its rate period now.
    SELECT c.name, c.paused, c.concurrency, c.rate_limit, c.key_concurrency, c.key_rate_limit, c.key_rate_period,
           CASE WHEN c.concurrency IS NOT NULL THEN
               (SELECT count(*) FROM jobs_job WHERE status IN ('claimed', 'running') AND queue = c.name) END AS held,
           CASE WHEN c.rate_limit IS NOT NULL THEN
               (SELECT count(*) FROM jobs_startlog WHERE scope = 'q:' || c.name
                  AND started_at > statement_timestamp() - make_interval(secs => c.rate_period)) END AS started
    FROM jobs_queuecontrol AS c
    WHERE %(queues)s::text[] IS NULL OR c.name = ANY(%(queues)s::text[])
), held_keys AS MATERIALIZED (
    SELECT queue, concurrency_key AS key, count(*) AS held FROM jobs_job
    WHERE status IN ('claimed', 'running') AND concurrency_key IS NOT NULL
    GROUP BY queue, concurrency_key
), key_limits AS MATERIALIZED (
    -- Each key's limits: its KeyLimit row, else its type's (concurrency only), else its queue's.
    SELECT k.queue, k.key, coalesce(l.concurrency, k.key_limit, q.key_concurrency) AS concurrency,
           coalesce(l.rate_limit, q.key_rate_limit) AS rate_limit,
           CASE WHEN l.rate_limit IS NOT NULL THEN l.rate_period ELSE q.key_rate_period END AS rate_period,
           coalesce(CASE WHEN k.key LIKE 'owner:%%'
                         THEN (SELECT sum(o.held)::bigint FROM held_keys AS o WHERE o.key = k.key)
                         ELSE h.held END, 0) AS held
    FROM keys AS k
    LEFT JOIN queues AS q ON q.name = k.queue
    LEFT JOIN jobs_keylimit AS l ON l.queue = k.queue AND l.key = k.key
    LEFT JOIN held_keys AS h ON h.queue = k.queue AND h.key = k.key
    WHERE NOT coalesce(q.paused, false)
), groups AS MATERIALIZED (
    -- What each group may still take (NULL: no limit of its own), and whether a rate counts its starts.
    SELECT queue, key, rate_limit IS NOT NULL AS key_rated,
           least(concurrency - held,
                 CASE WHEN rate_limit IS NOT NULL THEN rate_limit - (
                     SELECT count(*) FROM jobs_startlog WHERE scope = 'k:' || queue || ':' || key
                       AND started_at > statement_timestamp() - make_interval(secs => rate_period)) END) AS room
    FROM key_limits
    UNION ALL
    SELECT name, NULL, false, NULL FROM queues
    WHERE NOT paused AND (concurrency IS NOT NULL OR rate_limit IS NOT NULL)
), candidates AS MATERIALIZED (
    SELECT c.id, g.queue, g.key, c.priority, c.run_at, g.key_rated, g.room AS key_room,
           row_number() OVER (PARTITION BY g.queue, g.key ORDER BY c.priority DESC, c.run_at, c.id) AS turn
    FROM groups AS g CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at FROM jobs_job AS j
        WHERE j.status IN ('queued', 'scheduled', 'retrying') AND j.concurrency_key IS NOT NULL
          AND j.queue = g.queue AND j.concurrency_key = g.key
          AND j.run_at <= statement_timestamp() AND (j.expires_at IS NULL OR j.expires_at > statement_timestamp())
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT greatest(0, least(coalesce(g.room, %(limit)s), %(limit)s))
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE g.key IS NOT NULL
    UNION ALL
    SELECT c.id, g.queue, NULL, c.priority, c.run_at, false, NULL,
           row_number() OVER (PARTITION BY g.queue ORDER BY c.priority DESC, c.run_at, c.id)
    FROM groups AS g CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at FROM jobs_job AS j
        WHERE j.status IN ('queued', 'scheduled', 'retrying') AND j.concurrency_key IS NULL
          AND j.queue = g.queue
          AND j.run_at <= statement_timestamp() AND (j.expires_at IS NULL OR j.expires_at > statement_timestamp())
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE g.key IS NULL
), within_queues AS (
    -- Within each queue's own room, taking turns across its groups.
    SELECT c.*, q.rate_limit IS NOT NULL AS queue_rated,
           least(q.concurrency - q.held, q.rate_limit - q.started) AS queue_room,
           row_number() OVER (PARTITION BY c.queue ORDER BY c.turn, c.priority DESC, c.run_at, c.id) AS in_queue,
           CASE WHEN c.key LIKE 'owner:%%' THEN
               row_number() OVER (PARTITION BY c.key ORDER BY c.turn, c.priority DESC, c.run_at, c.id) END AS in_key
    FROM candidates AS c LEFT JOIN queues AS q ON q.name = c.queue
), picked AS MATERIALIZED (
    -- Rated jobs only as many as start now; they go first, so the claim starts them.
    SELECT id, queue, key, key_rated, queue_rated, key_rated OR queue_rated AS rated, turn, priority, run_at
    FROM (
        SELECT w.*, count(*) FILTER (WHERE w.key_rated OR w.queue_rated)
                        OVER (ORDER BY w.turn, w.priority DESC, w.run_at, w.id) AS rated_so_far
        FROM within_queues AS w
        WHERE (w.queue_room IS NULL OR w.in_queue <= w.queue_room) AND (w.in_key IS NULL OR w.key_room IS NULL OR w.in_key <= w.key_room)
    ) AS r
    WHERE NOT (key_rated OR queue_rated) OR rated_so_far <= %(start)s
    ORDER BY NOT (key_rated OR queue_rated), turn, priority DESC, run_at, id
    LIMIT %(limit)s
), chosen AS MATERIALIZED (
    SELECT ids, ids[1:%(start)s] AS starting
    FROM (SELECT ARRAY(SELECT id FROM picked ORDER BY NOT rated, turn, priority DESC, run_at, id) AS ids) AS a
), logged AS (
    INSERT INTO jobs_startlog (scope, started_at)
    SELECT 'q:' || queue, statement_timestamp() FROM picked WHERE queue_rated
    UNION ALL
    SELECT 'k:' || queue || ':' || key, statement_timestamp() FROM picked WHERE key_rated
)
UPDATE jobs_job AS j
SET status = CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN 'running' ELSE 'claimed' END,
    attempts = j.attempts + CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN 1 ELSE 0 END,
    started_at = CASE WHEN j.id = ANY((SELECT starting FROM chosen)::bigint[]) THEN statement_timestamp() END,
    leased_by = %(worker)s, lease_token = gen_random_uuid(),
    lease_expires_at = statement_timestamp() + make_interval(secs => %(lease)s),
    finished_at = NULL, progress = 0
WHERE j.id = ANY((SELECT ids FROM chosen)::bigint[])
RETURNING j.id, j.type, j.payload, j.attempts, j.max_retries, j.timeout, j.trace_id, j.queue, j.lease_token,
          j.owner_id, j.priority, extract(epoch FROM j.run_at)::float8, j.status = 'running';


-- name: flow_state
-- What a worker needs to know of flow control, read once per poll: the
-- paused queues, the queues with limits of their own, how many keys have a
-- job waiting (a skip scan of job_key_claim_idx, one probe per key, that
-- stops at %(keys)s), and whether any key is under a rate (claim_keyed_jobs
-- leaves those alone).
WITH RECURSIVE keys AS (
    (SELECT queue, concurrency_key AS key FROM jobs_job
     WHERE status IN ('queued', 'scheduled', 'retrying') AND concurrency_key IS NOT NULL
     ORDER BY queue, concurrency_key LIMIT 1)
    UNION ALL
    SELECT n.queue, n.key FROM keys AS k CROSS JOIN LATERAL (
        SELECT queue, concurrency_key AS key FROM jobs_job
        WHERE status IN ('queued', 'scheduled', 'retrying') AND concurrency_key IS NOT NULL
          AND (queue, concurrency_key) > (k.queue, k.key)
        ORDER BY queue, concurrency_key LIMIT 1
    ) AS n
)
SELECT coalesce(array_agg(name) FILTER (WHERE paused), '{}'),
       coalesce(array_agg(name) FILTER (WHERE NOT paused AND (concurrency IS NOT NULL OR rate_limit IS NOT NULL)), '{}'),
       (SELECT count(*) FROM (SELECT 1 FROM keys LIMIT %(keys)s) AS k),
       coalesce(bool_or(key_rate_limit IS NOT NULL), false)
       OR EXISTS (SELECT 1 FROM jobs_keylimit WHERE rate_limit IS NOT NULL)
FROM jobs_queuecontrol;


-- name: prune_start_log
-- Starts older than every rate period: no limit counts them any more.
DELETE FROM jobs_startlog WHERE started_at < statement_timestamp() - make_interval(secs => %(keep)s);


-- name: start_jobs
-- Claimed jobs that a slot of their worker started, each `ago` seconds
-- before this statement: now `running`, their attempt counted.
UPDATE jobs_job AS j
SET status = 'running', attempts = j.attempts + 1, progress = 0,
    started_at = statement_timestamp() - make_interval(secs => c.ago)
FROM jsonb_to_recordset(%(batch)s::jsonb) AS c(id bigint, token uuid, ago float8)
WHERE j.id = c.id AND j.lease_token = c.token AND (j.status = 'claimed') IS TRUE
RETURNING j.id, j.owner_id;


-- name: record_outcomes
-- The outcomes of a worker's tick, in one statement: held jobs whose
-- handler returned (`completed`, with its result), whose attempt failed
-- (`retrying` after `delay` seconds, counted from this statement's clock,
-- or `dead`, the DLQ, as jobs.retry.decide said), that snoozed
-- (`scheduled` after `delay`, the attempt given back: attempts as before
-- it) or that stopped on a cancel (`cancelled`). A job whose cancel was
-- asked for (cancel_requested_at) never waits again: a retry or snooze
-- reported before its worker heard of the cancel ends it `cancelled`. One JSON document
-- carries the batch: encoded in C by the worker and decoded here, where
-- parameter arrays cost psycopg a Python call per element, and a key a
-- record leaves out is NULL. `outcome` is what the history records
-- (completed, failed, timeout, interrupted), `run_s` how long the handler
-- ran, `ago` how long since its slot started it, `due` the job's run_at
-- when it was claimed (an epoch second): its wait is measured from then to
-- its start, since a retry moves run_at. `exception` is the importable
-- path of the exception class a failed attempt raised, kept in its history
-- entry (a Django task's TaskError names it; jobs.tasks); an entry without
-- one leaves the key out (jsonb_strip_nulls: nothing else in it is NULL).
-- A completed job keeps the error of an earlier attempt, a failed one the
-- result it never had.
WITH recorded AS (
    UPDATE jobs_job AS j
    SET status = CASE WHEN c.status IN ('retrying', 'scheduled') AND j.cancel_requested_at IS NOT NULL
                      THEN 'cancelled' ELSE c.status END,
        result = CASE WHEN c.status = 'completed' THEN c.result WHEN c.status = 'cancelled' THEN c.result
                      ELSE j.result END,
        error = CASE WHEN c.status IN ('completed', 'scheduled') THEN j.error ELSE c.error END,
        progress = CASE WHEN c.status = 'completed' THEN 100 ELSE j.progress END,
        run_at = CASE WHEN c.status IN ('retrying', 'scheduled') AND j.cancel_requested_at IS NULL
                      THEN statement_timestamp() + make_interval(secs => c.delay) ELSE j.run_at END,
        finished_at = CASE WHEN c.status IN ('retrying', 'scheduled') AND j.cancel_requested_at IS NULL THEN NULL
                           ELSE statement_timestamp() END,
        attempts = j.attempts + (j.started_at IS NULL)::integer - (c.status = 'scheduled')::integer,
        started_at = CASE WHEN c.status = 'scheduled' AND j.cancel_requested_at IS NULL THEN NULL
                          ELSE coalesce(j.started_at, statement_timestamp() - make_interval(secs => c.ago)) END,
        leased_by = NULL, lease_token = NULL, lease_expires_at = NULL,
        history = j.history || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
            'attempt', j.attempts + (j.started_at IS NULL)::integer, 'worker', j.leased_by,
            'started_at', coalesce(j.started_at, statement_timestamp() - make_interval(secs => c.ago)),
            'finished_at', statement_timestamp(), 'outcome', c.outcome, 'error', coalesce(c.error, ''),
            'traceback', coalesce(c.traceback, ''), 'exception', c.exception)))
    FROM jsonb_to_recordset(%(batch)s::jsonb) AS c(id bigint, token uuid, status text, result jsonb, delay float8,
                                                   error text, traceback text, exception text, outcome text,
                                                   run_s float8, ago float8, due float8)
    WHERE j.id = c.id AND j.lease_token = c.token AND (j.status IN ('claimed', 'running')) IS TRUE
    RETURNING j.id, j.owner_id, j.status, j.type, j.queue, c.run_s,
              extract(epoch FROM j.started_at)::float8 - c.due AS wait_s
), counted AS (
    INSERT INTO jobs_jobcounter (name, type, queue, le, value)
    SELECT CASE WHEN status = 'completed' THEN 'completed' ELSE 'failed' END, type, queue, NULL::float8, count(*)
    FROM recorded WHERE status IN ('completed', 'retrying', 'dead') GROUP BY 1, type, queue
    UNION ALL
    SELECT CASE WHEN status = 'dead' THEN 'dead' ELSE 'retried' END, type, queue, NULL::float8, count(*)
    FROM recorded WHERE status IN ('retrying', 'dead') GROUP BY 1, type, queue
    UNION ALL
    SELECT 'run_seconds_bucket', type, '', le, count(*) FROM (
        SELECT type, (SELECT min(b) FROM unnest(%(buckets)s::float8[]) AS b WHERE b >= greatest(run_s, 0)) AS le
        FROM recorded WHERE run_s IS NOT NULL
    ) AS observed GROUP BY type, le
    UNION ALL
    SELECT 'run_seconds_sum', type, '', NULL::float8, sum(greatest(run_s, 0)) FROM recorded WHERE run_s IS NOT NULL
    GROUP BY type
    UNION ALL
    SELECT 'queue_wait_seconds_bucket', type, '', le, count(*) FROM (
        SELECT type, (SELECT min(b) FROM unnest(%(buckets)s::float8[]) AS b WHERE b >= greatest(wait_s, 0)) AS le
        FROM recorded WHERE wait_s IS NOT NULL
    ) AS observed GROUP BY type, le
    UNION ALL
    SELECT 'queue_wait_seconds_sum', type, '', NULL::float8, sum(greatest(wait_s, 0)) FROM recorded
    WHERE wait_s IS NOT NULL GROUP BY type
), finished AS (
    INSERT INTO jobs_finishedcount (minute, owner_id, completed, dead)
    SELECT date_bin(interval '60 seconds', statement_timestamp(), TIMESTAMPTZ '2000-01-01'), owner_id,
           count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'dead')
    FROM recorded WHERE status IN ('completed', 'dead') GROUP BY owner_id
)
SELECT id, status, owner_id FROM recorded;


-- name: release_jobs
-- Held jobs that no slot started, given back by a worker that stops: due
-- again at once, as if never claimed. One that the claim started for a
-- slot that never took it gives its attempt back.
UPDATE jobs_job AS j
SET status = 'queued', attempts = j.attempts - (j.started_at IS NOT NULL)::integer, started_at = NULL,
    run_at = statement_timestamp(), progress = 0,
    leased_by = NULL, lease_token = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS c(id, token)
WHERE j.id = c.id AND j.lease_token = c.token AND (j.status IN ('claimed', 'running')) IS TRUE
RETURNING j.id, j.queue, j.owner_id;


-- name: renew_leases
-- The heartbeat: extend the leases of the held jobs the worker names;
-- return those that are still its own, each with whether a cancel of it
-- was asked for.
UPDATE jobs_job AS j SET lease_expires_at = statement_timestamp() + make_interval(secs => %(lease)s)
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS c(id, token)
WHERE j.id = c.id AND j.lease_token = c.token AND (j.status IN ('claimed', 'running')) IS TRUE
RETURNING j.id, j.cancel_requested_at IS NOT NULL;


-- name: set_progress
UPDATE jobs_job SET progress = %(percent)s
WHERE id = %(id)s AND lease_token = %(token)s AND status IN ('claimed', 'running')
RETURNING owner_id;


-- name: find_expired_leases
-- Held jobs whose worker stopped renewing their lease, oldest lease first,
-- locked until the rescue below in the same transaction. SKIP LOCKED: a
-- job being completed right now by its (late) worker is left alone, and
-- two rescuers never fight over a row. Run with bitmap scans off, so that
-- job_held_lease_idx is walked in order: the index keeps an entry for every
-- job that left claimed/running since the last vacuum, all with a lease
-- that has "expired". A plain index scan marks each dead the first time it
-- meets it and skips it from then on; a bitmap scan marks nothing and
-- re-reads them all (390 ms per call after 600k jobs, with autovacuum off).
SELECT id, type, attempts, max_retries, started_at IS NOT NULL AS started,
       extract(epoch FROM started_at - run_at)::float8 AS wait_s, cancel_requested_at IS NOT NULL AS cancelling
FROM jobs_job
WHERE status IN ('claimed', 'running') AND lease_expires_at < statement_timestamp()
ORDER BY lease_expires_at LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;


-- name: rescue_jobs
-- The jobs find_expired_leases locked, each with its new status. A started
-- one lost its attempt: it counts, and the job is `retrying` after `delay`
-- or `dead`, as jobs.retry.decide said, like any failed attempt. One that
-- was only claimed never ran: it is `queued` again, in its old place, with
-- nothing counted. One whose cancel was asked for is `cancelled`. The old
-- lease token is cleared, so the worker that lost the job, should it wake
-- up, can no longer write to it.
WITH rescued AS (
    UPDATE jobs_job AS j
    SET status = d.status,
        finished_at = CASE WHEN d.status IN ('dead', 'cancelled') THEN statement_timestamp() END,
        run_at = CASE WHEN d.status = 'retrying' THEN statement_timestamp() + make_interval(secs => d.delay)
                      ELSE j.run_at END,
        error = CASE WHEN d.status = 'queued' THEN j.error
                     ELSE 'Lease expired: worker ' || coalesce(j.leased_by::text, '?')
                          || ' stopped renewing it during attempt ' || j.attempts END,
        history = CASE WHEN d.status = 'queued' THEN j.history
                       ELSE j.history || jsonb_build_array(jsonb_build_object(
                           'attempt', j.attempts, 'worker', j.leased_by, 'started_at', j.started_at,
                           'finished_at', statement_timestamp(), 'outcome', 'lost', 'error', 'lease expired',
                           'traceback', '')) END,
        leased_by = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(delays)s::float8[], %(waits)s::float8[])
         AS d(id, status, delay, wait_s)
    WHERE j.id = d.id
    RETURNING j.id, j.status, j.queue, j.owner_id, j.type, j.attempts, j.trace_id, d.delay, d.wait_s
), counted AS (
    INSERT INTO jobs_jobcounter (name, type, queue, le, value)
    SELECT 'failed', type, queue, NULL::float8, count(*) FROM rescued WHERE status IN ('retrying', 'dead')
    GROUP BY type, queue
    UNION ALL
    SELECT CASE WHEN status = 'dead' THEN 'dead' ELSE 'retried' END, type, queue, NULL::float8, count(*) FROM rescued
    WHERE status IN ('retrying', 'dead') GROUP BY 1, type, queue
    UNION ALL
    SELECT 'queue_wait_seconds_bucket', type, '', le, count(*) FROM (
        SELECT type, (SELECT min(b) FROM unnest(%(buckets)s::float8[]) AS b WHERE b >= greatest(wait_s, 0)) AS le
        FROM rescued WHERE wait_s IS NOT NULL AND status <> 'queued'
    ) AS observed GROUP BY type, le
    UNION ALL
    SELECT 'queue_wait_seconds_sum', type, '', NULL::float8, sum(greatest(wait_s, 0)) FROM rescued
    WHERE wait_s IS NOT NULL AND status <> 'queued' GROUP BY type
), finished AS (
    INSERT INTO jobs_finishedcount (minute, owner_id, completed, dead)
    SELECT date_bin(interval '60 seconds', statement_timestamp(), TIMESTAMPTZ '2000-01-01'), owner_id, 0, count(*)
    FROM rescued WHERE status = 'dead' GROUP BY owner_id
)
SELECT id, status, queue, owner_id, type, attempts, trace_id, delay FROM rescued;


-- name: expire_jobs
-- Jobs whose TTL passed before any worker took them (job_expiry_idx).
UPDATE jobs_job SET status = 'expired', finished_at = statement_timestamp(), error = 'Expired before it could start.'
WHERE status IN ('queued', 'scheduled', 'retrying') AND expires_at <= statement_timestamp()
RETURNING id, owner_id;


-- name: stage_due_jobs
-- Scheduled and retrying jobs that are due now are relabelled `queued`, so
-- that what is stored is what every page shows. Only the label changes: a
-- worker claims a due job in any of the three ready statuses, so staging
-- never delays a job. Read through job_due_idx, which holds nothing else.
WITH due AS (
    SELECT id FROM jobs_job
    WHERE status IN ('scheduled', 'retrying') AND run_at <= statement_timestamp()
    ORDER BY run_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs_job AS j SET status = 'queued'
FROM due WHERE j.id = due.id
RETURNING j.id, j.owner_id;


-- name: prune_finished
-- Up to %(limit)s jobs, oldest first, that finished more than %(seconds)s
-- ago. Dead jobs stay: they are the DLQ. SKIP LOCKED: two leaders
-- overlapping for a moment take different rows.
DELETE FROM jobs_job WHERE id IN (
    SELECT id FROM jobs_job
    WHERE finished_at < statement_timestamp() - make_interval(secs => %(seconds)s)
      AND status IN ('completed', 'cancelled', 'expired')
    ORDER BY finished_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);


-- name: allocate_job_ids
-- %(count)s ids for jobs about to be inserted: a scheduler's round records
-- each tick with its job's id, and inserts only the jobs of the ticks it
-- could record.
SELECT nextval(pg_get_serial_sequence('jobs_job', 'id')) FROM generate_series(1, %(count)s);


-- name: insert_job_specs
-- One job per record of %(batch)s, each with options of its own (the jobs
-- of a scheduler's round, one for each of many schedules), in the order of
-- their `n`, with the `id` given (allocate_job_ids) or the next one,
-- counted per type and queue, with one NOTIFY per queue that got a job due
-- now (with ":k" after the name for keyed jobs, ":p" and the priority for
-- a priority other than %(named)s, as insert_job sends them). `notified`
-- is read by the last SELECT so that it runs, once.
WITH inserted AS (
    INSERT INTO jobs_job (id, owner_id, queue, type, payload, priority, status, attempts, max_retries, run_at,
                          timeout, expires_at, unique_key, idempotency_key, trace_id, created_at, error, history,
                          progress, concurrency_key, key_limit)
    SELECT coalesce(j.id, nextval(pg_get_serial_sequence('jobs_job', 'id'))), j.owner, j.queue, j.type, j.payload,
           j.priority, j.status, 0, j.max_retries, coalesce(j.run_at, statement_timestamp()), j.timeout,
           j.expires_at, NULL, NULL, j.trace_id, statement_timestamp(), '', '[]'::jsonb, 0, j.key, j.key_limit
    FROM jsonb_to_recordset(%(batch)s::jsonb) AS j(n integer, id bigint, owner bigint, queue text, type text,
                                                   payload jsonb, priority smallint, status text,
                                                   max_retries integer, run_at timestamptz, timeout float8,
                                                   expires_at timestamptz, trace_id text, key text,
                                                   key_limit integer)
    ORDER BY j.n
    RETURNING id, queue, type, status, priority, concurrency_key IS NOT NULL AS keyed
), counted AS (
    INSERT INTO jobs_jobcounter (name, type, queue, value)
    SELECT 'enqueued', type, queue, count(*) FROM inserted GROUP BY type, queue
), notified AS (
    SELECT pg_notify(%(channel)s, wake) FROM (
        SELECT DISTINCT queue || CASE WHEN keyed THEN %(keyed_suffix)s
                                      WHEN priority <> ALL(%(named)s::smallint[]) THEN %(priority_suffix)s || priority
                                      ELSE '' END AS wake
        FROM inserted
        WHERE status = 'queued' OR (NOT keyed AND priority <> ALL(%(named)s::smallint[]))
    ) AS due
)
SELECT id, (SELECT count(*) FROM notified) FROM inserted ORDER BY id;


-- name: round_now
-- The moment a round of the scheduler fires the ticks up to: the database's clock, or the one a test passes.
SELECT coalesce(%(now)s::timestamptz, statement_timestamp());


-- name: lock_due_schedules
-- Schedules whose next tick has passed, soonest first (schedule_due_idx),
-- locked until the round's transaction ends. SKIP LOCKED: a second
-- scheduler running at the same time (two leaders overlapping during a
-- failover, or maintainers started by hand) takes other schedules, never
-- these. When it reaches one of these after this round committed, the
-- row is read again as committed: its next_fire_at has moved past the
-- ticks handled here, so it is no longer due. %(now)s is the database's
-- clock (round_now), so the hosts' clocks do not matter; a test passes its own.
-- A cron schedule's anchor_at means nothing, and is not sent.
SELECT id, name, cron, interval_seconds, timezone, CASE WHEN interval_seconds IS NOT NULL THEN anchor_at END,
       type, payload, queue, priority, max_retries, timeout, ttl, enabled, paused_reason, misfire, catch_up_limit,
       overlap, jitter_seconds, next_fire_at, last_job_id
FROM jobs_schedule
WHERE next_fire_at <= %(now)s
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;


-- name: next_tick_due
-- Seconds until the soonest next tick (schedule_due_idx): when the leader's next round is due.
SELECT extract(epoch FROM min(next_fire_at) - statement_timestamp())::float8 FROM jobs_schedule
WHERE next_fire_at IS NOT NULL;


-- name: unfinished_jobs
-- Which of the jobs %(ids)s (the previous ticks' jobs) have not finished: the overlap policy's question.
SELECT id FROM jobs_job
WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('queued', 'scheduled', 'retrying', 'claimed', 'running');


-- name: insert_ticks
-- A round's ticks, each recorded at most once. A tick already recorded
-- (by another scheduler that got there first) is left as it is and not
-- returned, and the round enqueues no job for it: the unique constraint
-- scheduletick_once_per_tick is what guarantees one job per tick, in the
-- transaction that inserts the job; the lock of lock_due_schedules only
-- keeps two schedulers from doing the same work. The lag of each enqueued
-- tick, from its time to this statement, goes to the schedule_lag_seconds
-- histogram (jobs.counters), a row per bucket.
WITH inserted AS (
    INSERT INTO jobs_scheduletick (schedule_id, tick_at, outcome, detail, manual, job_id, recorded_at)
    SELECT t.schedule_id, t.tick_at, t.outcome, t.detail, t.manual, t.job_id, statement_timestamp()
    FROM jsonb_to_recordset(%(batch)s::jsonb)
         AS t(schedule_id bigint, tick_at timestamptz, outcome text, detail text, manual boolean, job_id bigint)
    ON CONFLICT (schedule_id, tick_at) DO NOTHING
    RETURNING schedule_id, tick_at, outcome, job_id
), lags AS (
    SELECT extract(epoch FROM statement_timestamp() - tick_at)::float8 AS lag FROM inserted
    WHERE outcome = 'enqueued'
), counted AS (
    INSERT INTO jobs_jobcounter (name, type, queue, le, value)
    SELECT 'schedule_lag_seconds_bucket', '', '', le, count(*) FROM (
        SELECT (SELECT min(b) FROM unnest(%(buckets)s::float8[]) AS b WHERE b >= greatest(lag, 0)) AS le FROM lags
    ) AS observed GROUP BY le
    UNION ALL
    SELECT 'schedule_lag_seconds_sum', '', '', NULL::float8, sum(greatest(lag, 0)) FROM lags HAVING count(*) > 0
)
SELECT schedule_id, outcome, job_id FROM inserted;


-- name: advance_schedules
-- The end of a round: each schedule gets its next tick, its last fire time
-- and job, its tick counts, and, if its job could not be built, its pause
-- and the reason.
UPDATE jobs_schedule AS s
SET next_fire_at = a.next_fire_at, last_fire_at = coalesce(a.last_fire_at, s.last_fire_at),
    last_job_id = coalesce(a.last_job_id, s.last_job_id), enabled = a.enabled, paused_reason = a.paused_reason,
    ticks_enqueued = s.ticks_enqueued + coalesce(a.enqueued, 0), ticks_skipped = s.ticks_skipped + coalesce(a.skipped, 0),
    ticks_missed = s.ticks_missed + coalesce(a.missed, 0), ticks_paused = s.ticks_paused + coalesce(a.paused, 0)
FROM jsonb_to_recordset(%(batch)s::jsonb)
     AS a(id bigint, next_fire_at timestamptz, last_fire_at timestamptz, last_job_id bigint, enabled boolean,
          paused_reason text, enqueued integer, skipped integer, missed integer, paused integer)
WHERE s.id = a.id;


-- name: prune_ticks
-- Ticks recorded more than %(seconds)s ago, up to %(limit)s, oldest first (scheduletick_recorded_idx).
DELETE FROM jobs_scheduletick WHERE id IN (
    SELECT id FROM jobs_scheduletick
    WHERE recorded_at < statement_timestamp() - make_interval(secs => %(seconds)s)
    ORDER BY recorded_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);
