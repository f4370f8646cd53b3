-- queue: the dispatcher's side of the deliveries.
--
-- Deliveries are claimed in batches with FOR UPDATE SKIP LOCKED and held
-- under a lease (status in_flight, lease_owner, lease_expires_at); no
-- transaction stays open while the HTTP request runs. Results come back in
-- batches through complete_deliveries(), which records each attempt, moves
-- the delivery on and keeps the webhook's health (a 410 Gone, or 5 days of
-- failures without a success, disables the webhook), but only while the
-- lease is still the caller's: a dispatcher that lost its lease (it stalled
-- past it and another took over) cannot overwrite the newer state. Expired
-- leases are reclaimed by any dispatcher, which is what makes delivery
-- at-least-once. The receiver and the history writer wait at most 5 s for a
-- row lock a person holds (an open transaction around webhook_remove, say):
-- a batch that times out is split and retried, and only what touches that
-- row waits, answered 503 or written again later (lock_timeout below and on
-- ingest()).

-- Deliveries wake the dispatchers: one NOTIFY per statement (and PostgreSQL
-- folds repeats within a transaction), never one per row; and only for
-- deliveries a claim could take now: pending and due, of a webhook that is
-- not resting (claim_deliveries), or a test push. A retry due later, or a
-- resting webhook's new delivery, is claimed by the dispatchers' poll
-- (every second) when its time comes: NOTIFYed, each cost a claim that
-- found nothing (100 a second in tests/bench/backlog.py, one per event to
-- the dead webhook). Nor while PostgreSQL's NOTIFY queue is half full:
-- every role that may connect can fill it (by listening in a transaction
-- it keeps open while notifying), and a transaction that NOTIFYs then
-- fails at its commit, which would have failed every ingest() that left a
-- delivery waiting; the poll takes those deliveries instead.
CREATE OR REPLACE FUNCTION reghook.notify_deliveries() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed c JOIN reghook.webhooks w ON w.id = c.webhook_id
               WHERE c.status = 'pending' AND c.next_attempt_at <= now()
                 AND (w.failures_in_a_row < 20 OR c.is_test))
       AND pg_notification_queue_usage() < 0.5 THEN
        PERFORM pg_notify('reghook_deliveries', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER deliveries_notify_insert AFTER INSERT ON reghook.deliveries
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION reghook.notify_deliveries();
CREATE OR REPLACE TRIGGER deliveries_notify_update AFTER UPDATE ON reghook.deliveries
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION reghook.notify_deliveries();

-- The plans of claim_deliveries and complete_deliveries are kept for the
-- connection's life (plpgsql), first made while a new database's tables are
-- nearly empty and not made again until ANALYZE, while the deliveries grow by
-- thousands a second. Both only ever touch rows they can name by key or by
-- index, so they are planned without sequential scans, hash or merge joins:
-- from stale statistics the planner chose to scan every delivery and event
-- at each call. JIT is off for them: those disabled paths cost past
-- jit_above_cost, and a cached plan is compiled again at every call.

-- job_of: what a dispatcher needs to send a delivery (its id, attempt,
-- round_start, action, is_test, callback_token, webhook and created_at) of
-- event e (NULL for a test push, which has none): the one definition of a
-- delivery_job, for leased_deliveries() and for ingest(), which builds the
-- jobs of what it hands over from the values it inserts (a scan of the
-- tables would not see those rows in the same statement). A set-returning
-- SQL function with no SET clause, not STRICT and not VOLATILE, so that the
-- planner inlines it into the caller's statement, planned with the caller's
-- search_path; only the dispatcher may call it.
CREATE OR REPLACE FUNCTION reghook.job_of(delivery_id uuid, attempt integer, round_start integer,
                                          action text, is_test boolean, callback_token text,
                                          webhook_id bigint, created_at timestamptz,
                                          e reghook.events)
RETURNS SETOF reghook.delivery_job
LANGUAGE sql STABLE AS $$
    -- The parameters are named in full: the tables have columns of the same names.
    SELECT job_of.delivery_id, job_of.attempt, job_of.round_start, job_of.action, job_of.is_test,
           job_of.callback_token,
           w.id, w.url, w.method, w.content_type, w.username, s.password, s.secret,
           w.format, w.timeout_ms, w.max_attempts,
           (SELECT coalesce(json_agg(json_build_array(h.name, h.value) ORDER BY h.position), '[]')
            FROM reghook.webhook_headers h WHERE h.webhook_id = w.id)::text,
           -- A test push (test_webhook) has no event: it names a made-up repository.
           coalesce(e.repository, n.name || '/reghook-test'),
           coalesce(e.name, CASE WHEN job_of.is_test THEN 'reghook-test' END),
           coalesce(e.tag, CASE WHEN job_of.is_test THEN 'test' END),
           e.digest, coalesce(e.actor, CASE WHEN job_of.is_test THEN session_user::text END),
           floor(extract(epoch FROM coalesce(e.occurred_at, job_of.created_at)))::bigint,
           e.raw::text, n.name, n.description, n.is_private,
           floor(extract(epoch FROM n.created_at))::bigint,
           -- What the other formats add (formats.h): the registry's event id and time, the
           -- manifest's media type and size (a number only), the source's name, the template.
           e.event_uuid, e.raw ->> 'timestamp', e.media_type,
           CASE WHEN jsonb_typeof(e.raw -> 'target' -> 'size') = 'number'
                     AND (e.raw -> 'target' ->> 'size') ~ '^[0-9]{1,18}$'
                THEN (e.raw -> 'target' ->> 'size')::bigint END,
           src.name, w.template
    FROM reghook.webhooks w
    JOIN reghook.namespaces n ON n.id = w.namespace_id
    LEFT JOIN reghook.registry_sources src ON src.id = e.source_id
    LEFT JOIN reghook.webhook_secrets s ON s.webhook_id = w.id
    WHERE w.id = job_of.webhook_id
$$;
COMMENT ON FUNCTION reghook.job_of(uuid, integer, integer, text, boolean, text, bigint, timestamptz,
                                   reghook.events) IS
    'Dispatcher: what is needed to send a delivery of an event (inlined into leased_deliveries and ingest).';

-- leased_deliveries: what a dispatcher needs to send the deliveries of ids
-- that it holds (in_flight under its lease): the ones claim_deliveries()
-- just leased. A delivery it no longer holds is left out.
CREATE OR REPLACE FUNCTION reghook.leased_deliveries(instance text, ids uuid[])
RETURNS SETOF reghook.delivery_job
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT j.*
    FROM reghook.deliveries c
    LEFT JOIN reghook.events e ON e.id = c.event_id
    CROSS JOIN LATERAL reghook.job_of(c.id, c.attempts, c.round_start, c.action, c.is_test,
                                      c.callback_token, c.webhook_id, c.created_at, e) j
    WHERE c.id = ANY (ids) AND c.status = 'in_flight' AND c.lease_owner = instance;
END
$$;
COMMENT ON FUNCTION reghook.leased_deliveries(text, uuid[]) IS
    'Dispatcher: what is needed to send the deliveries it holds under its lease.';

-- claim_deliveries: leases up to `max_total` due deliveries, at most
-- `per_webhook` in flight per webhook counting `in_flight` (a JSON object
-- {webhook_id: number already in flight at the caller}). Namespaces take
-- turns, and so do the webhooks of a namespace: the claim visits one
-- webhook of each namespace (in random order), then a second of each, and
-- so on, each namespace's in random order, so that neither a busy webhook
-- nor a namespace with many webhooks can starve the others. Webhooks in
-- random order alone were fair to webhooks, not to teams: one namespace's
-- 10,000 webhooks, each with a few deliveries due, filled every claim,
-- and another namespace's one webhook was picked by a claim in 40 at best
-- (its deliveries waited out most of that backlog: over a minute).
-- A webhook whose last 20 attempts or more all failed rests: it gets one
-- delivery at a time (none while one is in flight at any instance, until
-- its attempt is written), the next no sooner than 10 s after its last
-- failure, until one succeeds (which resets failures_in_a_row, as enabling
-- it does). Its other due deliveries wait without spending their attempts;
-- the 5-day rule still disables it. Without the rest, an endpoint down with
-- a large backlog due was sent every due delivery as fast as it refused
-- them, and each of those attempts was claimed, written and logged at the
-- cost of the other webhooks' claims (tests/bench/backlog.py). Only a
-- resting webhook makes the claim look at the rows in flight (the few that
-- the deliveries_lease index holds).
-- round_start tells the dispatcher where a retriggered delivery's round of
-- attempts began (retrigger.sql).
-- plpgsql, not sql: its statement's plan is cached for the session, where
-- an sql function's would be planned again at every call. That plan is the
-- generic one (plan_cache_mode): the enable_* settings price every plan in
-- the billions, and beside such costs the plan cache took a custom plan,
-- planned again at every call, once the deliveries were many (0.5 ms of a
-- 1.4 ms empty claim at 1,000,000 waiting, against a generic plan at 1,000).
-- A claim that leased nothing returns at once.
-- The claim's commit waits for the disk, as every commit of reghook's does:
-- a claim lost in a crash of PostgreSQL while its dispatcher lives on left
-- the delivery pending with its old attempt count, claimed again with the
-- same attempt number while the first request was still out, and the
-- first one's result (a 200) was then taken for the second lease's or
-- silently not recorded: the delivery sent twice at once, and failed
-- though its endpoint had taken it (synchronous_commit was off for the
-- claim until migration 025).
CREATE OR REPLACE FUNCTION reghook.claim_deliveries(instance text, max_total integer, per_webhook integer,
                                         in_flight jsonb, default_timeout_ms integer)
RETURNS SETOF reghook.delivery_job
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE leased uuid[];
BEGIN
    WITH picked AS (
        SELECT d.id
        FROM (SELECT w.id, w.enabled, coalesce((in_flight ->> w.id::text)::integer, 0) AS busy,
                     w.failures_in_a_row >= 20 AS resting,
                     w.last_failure_at > now() - interval '10 seconds' AS failed_lately,
                     -- A disabled or resting one's first test push due:
                     -- where the look through its deliveries below starts
                     -- (not through the backlog before it), for one at a
                     -- time. A resting webhook's goes first, and at once:
                     -- a person asked for it, most likely to see whether
                     -- the endpoint works again, and waiting behind the
                     -- rest's probes it was not sent for minutes.
                     CASE WHEN NOT w.enabled OR w.failures_in_a_row >= 20
                          THEN (SELECT min(t.next_attempt_at) FROM reghook.deliveries t
                                WHERE t.webhook_id = w.id AND t.status = 'pending'
                                  AND t.is_test AND t.attempts = 0
                                  AND t.next_attempt_at <= now()) END AS first_test
              FROM reghook.webhooks w
              -- Only those with a delivery to take now take turns: numbered
              -- among its idle or disabled webhooks, a namespace's one busy
              -- webhook came as late as in random order. A disabled one's
              -- test pushes have an index of their own: the rest of its
              -- deliveries wait, and a look through them made every claim
              -- read all of them (50 ms a claim at 100,000 waiting, for as
              -- long as a webhook disabled with a backlog stayed so).
              -- OFFSET 0: each a look by webhook, never the hashed subplan
              -- PostgreSQL may choose for an EXISTS inside CASE (from
              -- statistics that saw little due), which read every due
              -- delivery of every webhook, a disabled one's backlog too,
              -- at each claim.
              WHERE CASE WHEN w.enabled
                         THEN EXISTS (SELECT 1 FROM reghook.deliveries d
                                      WHERE d.webhook_id = w.id AND d.status = 'pending'
                                        AND d.next_attempt_at <= now() OFFSET 0)
                         ELSE EXISTS (SELECT 1 FROM reghook.deliveries d
                                      WHERE d.webhook_id = w.id AND d.status = 'pending'
                                        AND d.is_test AND d.attempts = 0
                                        AND d.next_attempt_at <= now() OFFSET 0) END
              ORDER BY row_number() OVER (PARTITION BY w.namespace_id ORDER BY random()), random()) w
        CROSS JOIN LATERAL (
            SELECT d.id FROM reghook.deliveries d
            WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()
              -- A disabled webhook's deliveries wait; a test push's
              -- first attempt goes anyway (the person asked for it), its
              -- retries wait like the others. So does a resting one's,
              -- before its probe.
              AND (w.enabled AND w.first_test IS NULL OR (d.is_test AND d.attempts = 0))
              AND d.next_attempt_at >= coalesce(w.first_test, '-infinity')
              -- A resting webhook's probe is its oldest due delivery and
              -- no other: two instances claiming at once both go for that
              -- one row (the same index scan's first: equal times are in
              -- the index's order), and the second skips it while the
              -- first holds it or finds it no longer pending once the
              -- first committed (a lease not yet committed is not in the
              -- in-flight test below; with SKIP LOCKED alone each took a
              -- row of its own).
              AND (NOT w.resting OR w.first_test IS NOT NULL OR d.id = (
                  SELECT x.id FROM reghook.deliveries x
                  WHERE x.webhook_id = w.id AND x.status = 'pending'
                    AND x.next_attempt_at <= now()
                    AND (w.enabled OR (x.is_test AND x.attempts = 0))
                    AND x.next_attempt_at >= coalesce(w.first_test, '-infinity')
                  ORDER BY x.next_attempt_at LIMIT 1))
            ORDER BY d.next_attempt_at
            LIMIT CASE WHEN w.first_test IS NOT NULL THEN least(1, greatest(0, per_webhook - w.busy))
                       WHEN NOT w.resting AND w.enabled THEN greatest(0, per_webhook - w.busy)
                       WHEN NOT w.resting THEN least(1, greatest(0, per_webhook - w.busy))
                       WHEN w.failed_lately
                            OR w.id IN (SELECT x.webhook_id FROM reghook.deliveries x
                                        WHERE x.status = 'in_flight') THEN 0
                       ELSE 1 END
            FOR UPDATE OF d SKIP LOCKED
        ) d
        LIMIT max_total
    ),
    claimed AS (
        UPDATE reghook.deliveries d
        SET status = 'in_flight', attempts = d.attempts + 1, lease_owner = instance,
            lease_expires_at = now() + make_interval(
                secs => (coalesce(w.timeout_ms, default_timeout_ms) + 15000) / 1000.0)
        FROM picked, reghook.webhooks w
        WHERE d.id = picked.id AND w.id = d.webhook_id
        RETURNING d.id
    )
    SELECT array_agg(id) INTO leased FROM claimed;
    IF leased IS NOT NULL THEN
        RETURN QUERY SELECT * FROM reghook.leased_deliveries(instance, leased);
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.claim_deliveries(text, integer, integer, jsonb, integer) IS
    'Dispatcher: leases due deliveries (fair to namespaces, then webhooks) and returns what is needed to send them.';

-- reclaim_expired: deliveries whose dispatcher vanished go back to the
-- queue; the lost attempt is recorded as such, and counts towards the
-- attempts of the delivery's round. But it never ends the round: nobody
-- knows whether its request was sent (a crash, or a batch's rows that never
-- reached the dispatcher), so the delivery goes back to the queue even after
-- its last attempt and gets at least one more real one (at-least-once).
-- Only a delivery whose leases were lost more than max_attempts times in
-- its round (one that stops every dispatcher that takes it, say) is
-- failed. A lost attempt is the one row with no method (below).
-- Planned as the claim is (by key, no sequential scans, hash or merge
-- joins): its statistics are stale by nature (soon after ANALYZE every
-- lease in them has run out), and from them one expired lease read every
-- webhook and every delivery.
CREATE OR REPLACE FUNCTION reghook.reclaim_expired(default_max_attempts integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE n integer;
BEGIN
    WITH expired AS (
        SELECT d.id, d.attempts, d.webhook_id, d.lease_owner,
               (SELECT count(*) FROM reghook.delivery_attempts a
                WHERE a.delivery_id = d.id AND a.attempt > d.round_start
                  AND a.attempt < d.attempts AND a.method = '')
                   >= coalesce(w.max_attempts, default_max_attempts) AS exhausted
        FROM reghook.deliveries d JOIN reghook.webhooks w ON w.id = d.webhook_id
        WHERE d.status = 'in_flight' AND d.lease_expires_at < now()
        FOR UPDATE OF d SKIP LOCKED
    ),
    lost AS (
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, error_class, error_message, instance)
        SELECT x.id, x.attempts, x.webhook_id, now(), 0, '', '', '[]', 'other',
               'no result: the dispatcher holding the delivery stopped before its lease ran out',
               coalesce(x.lease_owner, '')
        FROM expired x
        ON CONFLICT DO NOTHING
    )
    UPDATE reghook.deliveries d
    SET status = CASE WHEN x.exhausted THEN 'failed' ELSE 'pending' END,
        completed_at = CASE WHEN x.exhausted THEN now() END,
        next_attempt_at = now(), lease_owner = NULL, lease_expires_at = NULL,
        last_error = 'dispatcher lost (lease expired)'
    FROM expired x WHERE d.id = x.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION reghook.reclaim_expired(integer) IS
    'Dispatcher: returns deliveries with an expired lease to the queue, recording the lost attempt.';

-- release_deliveries: a stopping dispatcher gives back what it holds.
CREATE OR REPLACE FUNCTION reghook.release_deliveries(instance text, ids uuid[]) RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH r AS (
        UPDATE reghook.deliveries d
        SET status = 'pending', attempts = d.attempts - 1, next_attempt_at = now(),
            lease_owner = NULL, lease_expires_at = NULL
        WHERE d.id = ANY (ids) AND d.lease_owner = instance AND d.status = 'in_flight'
        RETURNING 1
    )
    SELECT count(*)::integer FROM r
$$;
COMMENT ON FUNCTION reghook.release_deliveries(text, uuid[]) IS
    'Dispatcher: gives back leased deliveries that were never attempted.';

-- complete_deliveries: records a batch of finished attempts. Each element:
--   id, attempt, webhook_id, attempted_at (epoch ms), duration_ms, method,
--   url, request_headers, request_body, response_status, response_headers,
--   response_body (hex), truncated, error_class, error_message,
--   outcome (succeeded | retry | failed | gone), delay_ms (for retry)
-- Returns the number of attempts recorded (lost leases are skipped); busy:
-- the ids of the deliveries still leased to the caller whose rows another
-- transaction holds (a person's open webhook_remove, say), whose records
-- are not written and not waited for (the caller writes them again once
-- the lock is gone, and the rest of the batch is not held up); and
-- missing: the ids with no delivery at all (yet: one whose ingest()
-- transaction lost its connection while it committed may still land).
-- One statement: the batch is read once, the deliveries whose lease is
-- still ours are locked and moved on, and what that UPDATE returns is what
-- the history and the webhooks' health are written from (each delivery
-- looked up by its key, so the cost grows with the batch, not with its
-- square).
-- The batch is json, not jsonb: it is read once, and json's parser only
-- scans the text where jsonb's would first build a tree of all of it. The
-- headers are read from it as text and cast to jsonb: read straight into a
-- jsonb column, json_to_recordset took 8 to 10 times as long, about
-- 0.1-0.25 ms a record, more than all the rest of the statement.
CREATE OR REPLACE FUNCTION reghook.complete_deliveries(instance text, batch json,
                                                       OUT recorded integer, OUT busy uuid[],
                                                       OUT missing uuid[])
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s'
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE health_runs jsonb;
BEGIN
    WITH b AS MATERIALIZED (
        SELECT b.id, b.attempt, b.webhook_id, to_timestamp(b.attempted_at / 1000.0) AS attempted_at,
               b.duration_ms, b.method, b.url, b.request_headers, b.request_body,
               b.response_status, b.response_headers, b.response_body,
               coalesce(b.truncated, false) AS truncated, b.error_class, b.error_message,
               b.outcome, b.delay_ms, b.format, instance AS owner, 'in_flight'::text AS leased
        FROM json_to_recordset(batch) AS b(id uuid, attempt integer, webhook_id bigint,
            attempted_at double precision, duration_ms integer, method text, url text,
            request_headers text, request_body text, response_status integer,
            response_headers text, response_body text, truncated boolean, error_class text,
            error_message text, outcome text, delay_ms bigint, format text)
    ),
    -- Only attempts whose lease is still ours count. Their rows are locked
    -- here, and one that another transaction holds is skipped (busy).
    -- Every test names a column of the batch, so none of them can
    -- filter the deliveries on their own: the planner then walks the
    -- batch and finds each delivery by its key. Tested against the
    -- constants instead, the lease filter (which PostgreSQL takes
    -- apart, column by column, even from a row comparison) made the
    -- deliveries the outer side of a nested loop whenever statistics
    -- said few were in flight, rescanning the whole batch for each one
    -- in flight: 1,000 x 1,000 comparisons a batch, seconds at the
    -- defaults, so records piled up, leases stayed held, and the
    -- dispatcher's claims waited for the writer.
    mine AS (
        SELECT x.* FROM b x JOIN reghook.deliveries d ON d.id = x.id
        WHERE (d.lease_owner, d.status, d.attempts) IS NOT DISTINCT FROM
              (x.owner, x.leased, x.attempt)
        FOR NO KEY UPDATE OF d SKIP LOCKED
    ),
    -- The rest (normally none, and then the lookups run for none): still
    -- ours in this statement's snapshot (so locked by another transaction,
    -- not lost), or not there at all.
    rest AS (
        SELECT x.id,
               EXISTS (SELECT FROM reghook.deliveries d
                       WHERE d.id = x.id
                         AND (d.lease_owner, d.status, d.attempts) IS NOT DISTINCT FROM
                             (x.owner, x.leased, x.attempt)) AS ours,
               NOT EXISTS (SELECT FROM reghook.deliveries d WHERE d.id = x.id) AS gone
        FROM b x
        WHERE x.id NOT IN (SELECT m.id FROM mine m)
    ),
    moved AS (
        UPDATE reghook.deliveries d
        SET status = CASE x.outcome WHEN 'succeeded' THEN 'succeeded'
                                    WHEN 'retry' THEN 'pending'
                                    ELSE 'failed' END,
            next_attempt_at = CASE WHEN x.outcome = 'retry'
                                   THEN now() + make_interval(secs => x.delay_ms / 1000.0)
                                   ELSE d.next_attempt_at END,
            completed_at = CASE WHEN x.outcome = 'retry' THEN NULL ELSE now() END,
            last_error = CASE WHEN x.outcome = 'succeeded' THEN NULL
                              ELSE coalesce(x.error_message, 'HTTP ' || x.response_status) END,
            lease_owner = NULL, lease_expires_at = NULL
        FROM mine x
        WHERE d.id = x.id
          AND (d.lease_owner, d.status, d.attempts) IS NOT DISTINCT FROM
              (x.owner, x.leased, x.attempt)
        RETURNING x.*
    ),
    recorded AS (
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, request_body, response_status,
            response_headers, response_body, response_truncated, error_class, error_message,
            instance, format)
        SELECT id, attempt, webhook_id, attempted_at, duration_ms, method, url,
               request_headers::jsonb, request_body, response_status, response_headers::jsonb,
               decode(response_body, 'hex'),
               truncated, error_class, error_message, instance, format
        FROM moved
        ON CONFLICT (delivery_id, attempt) DO NOTHING
    ),
    -- Webhook health: a success resets the failure run; the run's start is kept.
    -- Only attempts begun since the webhook was last changed by a person
    -- count (updated_at: a new URL, enabling it, ...): a 410 from the URL
    -- it had before must not disable it, nor old failures start a new run.
    -- An attempt stamped later than now (a dispatcher's clock ahead of the
    -- database's) counts as made now: a failure from the future would
    -- otherwise outlast every success until that time came. One stamped
    -- more than a day ago (a clock days behind) counts as made a day ago:
    -- its failure began a run of failures days old, and the 5-day rule
    -- disabled the webhook at its first failure.
    counted AS (
        SELECT m.webhook_id, m.outcome,
               greatest(least(m.attempted_at, now()), now() - interval '1 day') AS attempted_at
        FROM moved m JOIN reghook.webhooks w ON w.id = m.webhook_id
        WHERE m.attempted_at >= w.updated_at
    ),
    last_ok AS (
        SELECT webhook_id, max(attempted_at) FILTER (WHERE outcome = 'succeeded') AS at
        FROM counted GROUP BY webhook_id
    ),
    runs AS (
        SELECT m.webhook_id, k.at AS last_ok,
               max(m.attempted_at) FILTER (WHERE m.outcome <> 'succeeded') AS last_bad,
               bool_or(m.outcome = 'gone') AS gone,
               count(*) FILTER (WHERE m.outcome <> 'succeeded'
                                  AND (k.at IS NULL OR m.attempted_at > k.at)) AS fails_after,
               min(m.attempted_at) FILTER (WHERE m.outcome <> 'succeeded'
                                             AND (k.at IS NULL OR m.attempted_at > k.at))
                   AS first_fail_after,
               count(*) FILTER (WHERE m.outcome <> 'succeeded') AS fails,
               min(m.attempted_at) FILTER (WHERE m.outcome <> 'succeeded') AS first_fail,
               min(m.attempted_at) AS earliest
        FROM counted m JOIN last_ok k USING (webhook_id)
        GROUP BY m.webhook_id, k.at
    )
    SELECT (SELECT count(*) FROM moved),
           coalesce((SELECT array_agg(id) FILTER (WHERE ours) FROM rest), '{}'),
           coalesce((SELECT array_agg(id) FILTER (WHERE gone) FROM rest), '{}'),
           (SELECT jsonb_agg(r) FROM runs r)
    INTO recorded, busy, missing, health_runs;
    IF health_runs IS NULL THEN
        RETURN;
    END IF;
    -- The webhooks' health: their rows are locked in the order of their
    -- ids, waiting for another dispatcher's batch that holds one (its
    -- commit is a few milliseconds away), so that no batch's counts, its
    -- 410 or its success are lost: skipped, a batch's health was never
    -- made up. A row held longer is a person's (an open transaction
    -- around webhook_set, say), which must not stall the history of every
    -- namespace: after 250 ms, only the rows free then are updated, and
    -- that batch's health is lost for the held ones (README: Who sees
    -- what).
    BEGIN
        PERFORM set_config('lock_timeout', '250ms', true);
        PERFORM FROM reghook.webhooks w
        WHERE w.id IN (SELECT (r ->> 'webhook_id')::bigint FROM jsonb_array_elements(health_runs) r)
        ORDER BY w.id
        FOR NO KEY UPDATE;
        PERFORM set_config('lock_timeout', '5s', true);
    EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
        NULL;
    END;
    WITH runs AS (
        SELECT * FROM jsonb_to_recordset(health_runs) AS r(webhook_id bigint, last_ok timestamptz,
            last_bad timestamptz, gone boolean, fails_after bigint, first_fail_after timestamptz,
            fails bigint, first_fail timestamptz, earliest timestamptz)
    ),
    -- Those held by this transaction now, and any other free (SKIP LOCKED
    -- passes only rows that another transaction holds).
    free AS (
        SELECT w.id FROM reghook.webhooks w
        WHERE w.id IN (SELECT webhook_id FROM runs)
        FOR NO KEY UPDATE SKIP LOCKED
    ),
    -- Results are written in the order requests end, not begin: a success
    -- ends the run only if it began after the last failure recorded (a slow
    -- one landing after faster failures does not), and the last success and
    -- failure never go back in time.
    -- The webhook may have been changed (enabled, given a new URL) since
    -- the first statement chose the attempts that count, which read it
    -- unlocked: read locked now, a change made meanwhile drops this batch's
    -- health for it, as for a held row.
    ends AS (
        SELECT r.*, r.last_ok IS NOT NULL
                    AND r.last_ok > coalesce(w.last_failure_at, '-infinity') AS ends_run
        FROM runs r JOIN reghook.webhooks w ON w.id = r.webhook_id
        WHERE r.webhook_id IN (SELECT id FROM free) AND r.earliest >= w.updated_at
    ),
    -- A day without a failure (and without a success) ends a run as far as
    -- the 5-day rule goes: a webhook that failed a push's deliveries last
    -- week, then had nothing to send, was disabled at the first failure
    -- after, "5 days of failures" that were one day's.
    health AS (
        SELECT e.*, CASE WHEN e.ends_run THEN e.fails_after ELSE e.fails END AS fails_new,
               NOT e.ends_run AND w.last_failure_at < e.first_fail - interval '1 day'
                   AS quiet_day,
               CASE WHEN e.ends_run THEN e.first_fail_after
                    WHEN w.last_failure_at < e.first_fail - interval '1 day' THEN e.first_fail
                    ELSE coalesce(w.failing_since, e.first_fail) END AS since
        FROM ends e JOIN reghook.webhooks w ON w.id = e.webhook_id
    )
    -- 410 disables a webhook, and so do 5 days of failures without a success.
    UPDATE reghook.webhooks w
    SET last_success_at = greatest(h.last_ok, w.last_success_at),
        last_failure_at = greatest(h.last_bad, w.last_failure_at),
        failures_in_a_row = CASE WHEN h.ends_run OR h.quiet_day THEN h.fails_new
                                 ELSE w.failures_in_a_row + h.fails_new END,
        failing_since = h.since,
        enabled = w.enabled AND NOT h.gone
                  AND NOT coalesce(h.since < now() - interval '5 days', false),
        disabled_reason = CASE
            WHEN NOT w.enabled THEN w.disabled_reason
            WHEN h.gone THEN 'endpoint answered 410 Gone'
            WHEN h.since < now() - interval '5 days'
            THEN 'no successful delivery for 5 days of failures (since '
                 || to_char(h.since, 'YYYY-MM-DD HH24:MI:SS TZ') || ')'
            ELSE w.disabled_reason END
    FROM health h WHERE w.id = h.webhook_id;
END
$$;
COMMENT ON FUNCTION reghook.complete_deliveries(text, json) IS
    'Dispatcher: records a batch of attempts and moves their deliveries on (lease permitting); returns how many, the deliveries another transaction holds, and those not there.';

-- record_callback: a Docker Hub style callback from an endpoint. It runs
-- on a dispatcher's control connection, which also carries readiness and
-- the LISTENs: a row lock a person holds (an open transaction around
-- webhook_remove or a retrigger) is waited for at most 1 s, after which
-- the endpoint is answered 503 and retries, rather than everything on that
-- connection waiting behind it until db_timeout drops it.
CREATE OR REPLACE FUNCTION reghook.record_callback(token text, state text, description text,
                                        context text, target_url text)
RETURNS uuid
LANGUAGE sql SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
    UPDATE reghook.deliveries
    SET callback_state = state, callback_description = description,
        callback_context = context, callback_target_url = target_url, callback_at = now()
    WHERE callback_token = token
    RETURNING id
$$;
COMMENT ON FUNCTION reghook.record_callback(text, text, text, text, text) IS
    'Records what an endpoint reported through its callback_url; NULL for an unknown token.';
