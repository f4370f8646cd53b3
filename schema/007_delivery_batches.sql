-- 007_delivery_batches: the dispatcher's queue functions, made cheaper.
--
-- The claim's plan is cached per session and its commit does not wait for
-- the disk; a batch of completions is one statement whose cost grows with
-- the batch (the version of 003 read the batch again for every delivery),
-- taking its batch as json, which it reads once and needs no jsonb tree
-- for. Replaced functions get the grants of 006 again.

-- claim_deliveries: leases up to `max_total` due deliveries, at most
-- `per_webhook` in flight per webhook counting `in_flight` (a JSON object
-- {webhook_id: number already in flight at the caller}). Webhooks are
-- visited in random order so that a busy one cannot starve the others.
-- round_start (006) tells the dispatcher where a retriggered delivery's
-- round of attempts began.
-- plpgsql, not sql: its statement's plan is cached for the session, where
-- an sql function's would be planned again at every call.
-- The claim commits without waiting for the disk (synchronous_commit off
-- for its own transaction): a claim lost in a crash leaves its delivery
-- pending, to be sent again, which at-least-once allows; and the claim's
-- commit record precedes the completion of its attempt in the WAL, so a
-- durable completion makes its claim durable too.
DROP FUNCTION reghook.claim_deliveries(text, integer, integer, jsonb, integer);
CREATE FUNCTION reghook.claim_deliveries(instance text, max_total integer, per_webhook integer,
                                         in_flight jsonb, default_timeout_ms integer)
RETURNS TABLE (
    delivery_id uuid, attempt integer, round_start integer, action text, is_test boolean, callback_token text,
    webhook_id bigint, url text, method text, content_type text, username text,
    password text, secret text, format text, timeout_ms integer, max_attempts integer,
    headers text, repository text, name text, tag text, digest text, actor text,
    occurred_at bigint, raw text, namespace text, description text, is_private boolean,
    namespace_created_at bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH picked AS (
        SELECT d.id
        FROM (SELECT w.id, w.enabled FROM reghook.webhooks w ORDER BY random()) w
        CROSS JOIN LATERAL (
            SELECT d.id FROM reghook.deliveries d
            WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()
              -- A disabled webhook's deliveries wait; a test push goes anyway.
              AND (w.enabled OR d.is_test)
            ORDER BY d.next_attempt_at
            LIMIT greatest(0, per_webhook - coalesce((in_flight ->> w.id::text)::integer, 0))
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
        RETURNING d.*
    )
    SELECT c.id, c.attempts, c.round_start, c.action, c.is_test, c.callback_token,
           w.id, w.url, w.method, w.content_type, w.username, s.password, s.secret,
           w.format, w.timeout_ms, w.max_attempts,
           (SELECT coalesce(json_agg(json_build_array(h.name, h.value) ORDER BY h.position), '[]')
            FROM reghook.webhook_headers h WHERE h.webhook_id = w.id)::text,
           -- A test push (test_webhook) has no event: it names a made-up repository.
           coalesce(e.repository, n.name || '/reghook-test'),
           coalesce(e.name, CASE WHEN c.is_test THEN 'reghook-test' END),
           coalesce(e.tag, CASE WHEN c.is_test THEN 'test' END),
           e.digest, coalesce(e.actor, CASE WHEN c.is_test THEN session_user::text END),
           floor(extract(epoch FROM coalesce(e.occurred_at, c.created_at)))::bigint,
           e.raw::text, n.name, n.description, n.is_private,
           floor(extract(epoch FROM n.created_at))::bigint
    FROM claimed c
    JOIN reghook.webhooks w ON w.id = c.webhook_id
    JOIN reghook.namespaces n ON n.id = w.namespace_id
    LEFT JOIN reghook.events e ON e.id = c.event_id
    LEFT JOIN reghook.webhook_secrets s ON s.webhook_id = w.id;
END
$$;
COMMENT ON FUNCTION reghook.claim_deliveries(text, integer, integer, jsonb, integer) IS
    'Dispatcher: leases due deliveries (per-webhook fair) and returns what is needed to send them.';

-- complete_deliveries: records a batch of finished attempts. Each element:
--   id, attempt, webhook_id, attempted_at (epoch ms), duration_ms, method,
--   url, request_headers, request_body, response_status, response_headers,
--   response_body (hex), truncated, error_class, error_message,
--   outcome (succeeded | retry | failed | gone), delay_ms (for retry)
-- Returns the number of attempts recorded (lost leases are skipped).
-- One statement: the batch is read once, the deliveries whose lease is
-- still ours are moved on, and what that UPDATE returns is what the
-- history and the webhooks' health are written from (each delivery looked
-- up by its key, so the cost grows with the batch, not with its square).
-- The batch is json, not jsonb: it is read once, and json's parser only
-- scans the text where jsonb's would first build a tree of all of it.
DROP FUNCTION reghook.complete_deliveries(text, jsonb);
CREATE FUNCTION reghook.complete_deliveries(instance text, batch json) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE n integer;
BEGIN
    WITH b AS MATERIALIZED (
        SELECT b.id, b.attempt, b.webhook_id, to_timestamp(b.attempted_at / 1000.0) AS attempted_at,
               b.duration_ms, b.method, b.url, b.request_headers, b.request_body,
               b.response_status, b.response_headers, b.response_body,
               coalesce(b.truncated, false) AS truncated, b.error_class, b.error_message,
               b.outcome, b.delay_ms
        FROM json_to_recordset(batch) AS b(id uuid, attempt integer, webhook_id bigint,
            attempted_at double precision, duration_ms integer, method text, url text,
            request_headers jsonb, request_body text, response_status integer,
            response_headers jsonb, response_body text, truncated boolean, error_class text,
            error_message text, outcome text, delay_ms bigint)
    ),
    -- Only attempts whose lease is still ours count.
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
        FROM b x
        -- Written as one row comparison, which the planner cannot match to
        -- the index of in-flight deliveries: it then walks the batch and
        -- finds each delivery by its key, rather than rescanning the batch
        -- for every in-flight delivery its statistics say are few.
        WHERE d.id = x.id
          AND (d.lease_owner, d.status, d.attempts) IS NOT DISTINCT FROM
              (instance, 'in_flight', x.attempt)
        RETURNING x.*
    ),
    recorded AS (
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, request_body, response_status,
            response_headers, response_body, response_truncated, error_class, error_message,
            instance)
        SELECT id, attempt, webhook_id, attempted_at, duration_ms, method, url, request_headers,
               request_body, response_status, response_headers, decode(response_body, 'hex'),
               truncated, error_class, error_message, instance
        FROM moved
        ON CONFLICT (delivery_id, attempt) DO NOTHING
    ),
    -- Webhook health: a success resets the failure run; the run's start is kept.
    last_ok AS (
        SELECT webhook_id, max(attempted_at) FILTER (WHERE outcome = 'succeeded') AS at
        FROM moved GROUP BY webhook_id
    ),
    runs AS (
        SELECT m.webhook_id, k.at AS last_ok,
               max(m.attempted_at) FILTER (WHERE m.outcome <> 'succeeded') AS last_bad,
               bool_or(m.outcome = 'gone') AS gone,
               count(*) FILTER (WHERE m.outcome <> 'succeeded'
                                  AND (k.at IS NULL OR m.attempted_at > k.at)) AS fails_after,
               min(m.attempted_at) FILTER (WHERE m.outcome <> 'succeeded'
                                             AND (k.at IS NULL OR m.attempted_at > k.at))
                   AS first_fail_after
        FROM moved m JOIN last_ok k USING (webhook_id)
        GROUP BY m.webhook_id, k.at
    ),
    -- Health is kept on the webhooks whose rows are free now: one that a
    -- person holds (an open transaction around webhook_set, say) must not
    -- stall the history of every namespace. Its health catches up with its
    -- next batch; a 410 or the 5 days disable it on its next attempt.
    free AS (
        SELECT w.id FROM reghook.webhooks w
        WHERE w.id IN (SELECT webhook_id FROM runs)
        FOR NO KEY UPDATE SKIP LOCKED
    ),
    health AS (
        SELECT r.*, CASE WHEN r.last_ok IS NOT NULL THEN r.first_fail_after
                         ELSE coalesce(w.failing_since, r.first_fail_after) END AS since
        FROM runs r JOIN reghook.webhooks w ON w.id = r.webhook_id
        WHERE r.webhook_id IN (SELECT id FROM free)
    ),
    -- 410 disables a webhook, and so do 5 days of failures without a success.
    healed AS (
        UPDATE reghook.webhooks w
        SET last_success_at = coalesce(h.last_ok, w.last_success_at),
            last_failure_at = coalesce(h.last_bad, w.last_failure_at),
            failures_in_a_row = CASE WHEN h.last_ok IS NOT NULL THEN h.fails_after
                                     ELSE w.failures_in_a_row + h.fails_after END,
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
        FROM health h WHERE w.id = h.webhook_id
    )
    SELECT count(*) INTO n FROM moved;
    RETURN n;
END
$$;
COMMENT ON FUNCTION reghook.complete_deliveries(text, json) IS
    'Dispatcher: records a batch of attempts and moves their deliveries on (lease permitting).';

-- Every function runs with a fixed search_path, so that no schema a
-- caller can write to (public, on older clusters) can put a function or
-- operator in front of pg_catalog's. IMMUTABLE SQL helpers stay without
-- one, so that they can be inlined; the functions that call them have it.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'reghook' AND p.proconfig IS NULL
               AND NOT (p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql')
                        AND p.provolatile = 'i') LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$$;
-- The receiver and the history writer wait at most 5 s for a row lock a
-- person holds (an open transaction around webhook_remove, say): a batch
-- that times out is split and retried, and only what touches that row
-- waits, answered 503 or written again later.
ALTER FUNCTION reghook.ingest(jsonb) SET lock_timeout = '5s';
ALTER FUNCTION reghook.complete_deliveries(text, json) SET lock_timeout = '5s';

-- Functions of later migrations are not PUBLIC's either.
ALTER DEFAULT PRIVILEGES IN SCHEMA reghook REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

REVOKE ALL ON FUNCTION reghook.claim_deliveries(text, integer, integer, jsonb, integer),
    reghook.complete_deliveries(text, json) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reghook.claim_deliveries(text, integer, integer, jsonb, integer),
    reghook.complete_deliveries(text, json) TO reghook_admin, reghook_dispatcher;
