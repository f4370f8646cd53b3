-- history: what people read of the deliveries, and how long it is kept.
--
-- People read delivery_history and webhook_health. Both views run with the
-- reader's rights (security_invoker), so row-level security (authz.sql)
-- decides what each reader sees.
--
-- delivery_history is deliveries LEFT JOIN attempts. The join also equates
-- the two webhook_id columns, so that a filter on webhook_id reaches the
-- (webhook_id, attempted_at) index of the attempts: a webhook's last
-- attempts, asked with `attempt IS NOT NULL ... ORDER BY attempted_at DESC
-- LIMIT n`, come from that index, and a time window from (attempted_at).
-- Each row also carries what the endpoint reported through its
-- callback_url (the same on every attempt row of the delivery).
CREATE OR REPLACE VIEW reghook.delivery_history WITH (security_invoker = true) AS
SELECT d.id AS delivery_id, a.attempt, d.webhook_id, w.name AS webhook_name, n.name AS namespace,
       coalesce(e.repository, n.name || '/reghook-test') AS repository,
       coalesce(e.tag, CASE WHEN d.is_test THEN 'test' END) AS tag, e.digest, d.action,
       coalesce(a.url, w.url) AS url, d.status, a.response_status, a.duration_ms,
       a.error_message AS error, a.attempted_at,
       CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
       a.error_class, d.is_test, d.event_id, d.created_at,
       d.callback_state, d.callback_description, d.callback_context, d.callback_target_url,
       d.callback_at, coalesce(a.format, w.format) AS format
FROM reghook.deliveries d
JOIN reghook.webhooks w ON w.id = d.webhook_id
JOIN reghook.namespaces n ON n.id = w.namespace_id
LEFT JOIN reghook.events e ON e.id = d.event_id
LEFT JOIN reghook.delivery_attempts a ON a.delivery_id = d.id AND a.webhook_id = d.webhook_id;
COMMENT ON VIEW reghook.delivery_history IS
    'One row per delivery attempt; a delivery not tried yet appears once with its attempt columns NULL.';
COMMENT ON COLUMN reghook.delivery_history.delivery_id IS 'The delivery (X-Reghook-Delivery).';
COMMENT ON COLUMN reghook.delivery_history.attempt IS 'Attempt number, from 1; NULL for a delivery not tried yet.';
COMMENT ON COLUMN reghook.delivery_history.webhook_id IS 'The webhook.';
COMMENT ON COLUMN reghook.delivery_history.webhook_name IS 'The webhook''s name.';
COMMENT ON COLUMN reghook.delivery_history.namespace IS 'The webhook''s namespace.';
COMMENT ON COLUMN reghook.delivery_history.repository IS 'Repository of the event.';
COMMENT ON COLUMN reghook.delivery_history.tag IS 'Tag of the event, if any.';
COMMENT ON COLUMN reghook.delivery_history.digest IS 'Manifest digest of the event, if any.';
COMMENT ON COLUMN reghook.delivery_history.action IS 'push or delete.';
COMMENT ON COLUMN reghook.delivery_history.url IS 'URL requested (the webhook''s URL template if not tried yet).';
COMMENT ON COLUMN reghook.delivery_history.status IS 'Of the delivery, now: pending, in_flight, succeeded, failed.';
COMMENT ON COLUMN reghook.delivery_history.response_status IS 'HTTP status answered; NULL on a transport failure.';
COMMENT ON COLUMN reghook.delivery_history.duration_ms IS 'How long the attempt took.';
COMMENT ON COLUMN reghook.delivery_history.error IS 'What went wrong, for a person; NULL on success.';
COMMENT ON COLUMN reghook.delivery_history.attempted_at IS 'When the attempt started.';
COMMENT ON COLUMN reghook.delivery_history.next_attempt_at IS 'For a pending delivery, when its next attempt is due.';
COMMENT ON COLUMN reghook.delivery_history.error_class IS 'dns, connect, tls, timeout, blocked, http or other.';
COMMENT ON COLUMN reghook.delivery_history.is_test IS 'A test push made by test_webhook().';
COMMENT ON COLUMN reghook.delivery_history.event_id IS 'The event delivered (NULL for a test push).';
COMMENT ON COLUMN reghook.delivery_history.created_at IS 'When the delivery was created.';
COMMENT ON COLUMN reghook.delivery_history.callback_state IS
    'What the endpoint reported through callback_url: success, failure or error; NULL if nothing.';
COMMENT ON COLUMN reghook.delivery_history.callback_description IS 'The description it reported.';
COMMENT ON COLUMN reghook.delivery_history.format IS
    'The payload format the attempt was sent in (the webhook''s format for one not tried yet).';
COMMENT ON COLUMN reghook.delivery_history.callback_context IS 'The context it reported.';
COMMENT ON COLUMN reghook.delivery_history.callback_target_url IS 'The target_url it reported.';
COMMENT ON COLUMN reghook.delivery_history.callback_at IS 'When it last reported.';

CREATE OR REPLACE VIEW reghook.webhook_health WITH (security_invoker = true) AS
SELECT w.id AS webhook_id, w.name AS webhook_name, n.name AS namespace, w.enabled, w.disabled_reason,
       w.last_success_at, w.last_failure_at, w.failures_in_a_row,
       -- An OR, not IN: each status then matches a partial index of the
       -- queue, where IN read all of the webhook's history.
       (SELECT count(*) FROM reghook.deliveries d
        WHERE d.webhook_id = w.id AND (d.status = 'pending' OR d.status = 'in_flight')) AS pending,
       (SELECT round(avg(CASE WHEN a.error_class IS NULL THEN 1 ELSE 0 END), 3)
        FROM reghook.delivery_attempts a
        WHERE a.webhook_id = w.id AND a.attempted_at > now() - interval '24 hours') AS success_rate_24h,
       w.url, w.failing_since, w.format
FROM reghook.webhooks w
JOIN reghook.namespaces n ON n.id = w.namespace_id;
COMMENT ON VIEW reghook.webhook_health IS 'One row per webhook: is it enabled, is it healthy, how much waits.';
COMMENT ON COLUMN reghook.webhook_health.webhook_id IS 'The webhook.';
COMMENT ON COLUMN reghook.webhook_health.webhook_name IS 'The webhook''s name.';
COMMENT ON COLUMN reghook.webhook_health.namespace IS 'The webhook''s namespace.';
COMMENT ON COLUMN reghook.webhook_health.enabled IS 'Whether it gets deliveries.';
COMMENT ON COLUMN reghook.webhook_health.disabled_reason IS 'Why it was disabled (410 Gone, days of failures, a person).';
COMMENT ON COLUMN reghook.webhook_health.last_success_at IS 'Time of the last 2xx answer.';
COMMENT ON COLUMN reghook.webhook_health.last_failure_at IS 'Time of the last failed attempt.';
COMMENT ON COLUMN reghook.webhook_health.failures_in_a_row IS 'Failed attempts since the last success.';
COMMENT ON COLUMN reghook.webhook_health.pending IS 'Deliveries waiting or in flight.';
COMMENT ON COLUMN reghook.webhook_health.success_rate_24h IS
    'Share of the last 24 hours'' attempts that succeeded, 0 to 1; NULL without attempts.';
COMMENT ON COLUMN reghook.webhook_health.url IS 'The webhook''s URL template.';
COMMENT ON COLUMN reghook.webhook_health.format IS 'The webhook''s payload format.';
COMMENT ON COLUMN reghook.webhook_health.failing_since IS 'First failure since the last success, if failing.';

-- prune_history_from: the janitor of `reghook serve` prunes history older
-- than history_retention by calling it repeatedly, each call removing at most
-- `batch` finished deliveries (with their attempts) and `batch` events that
-- no delivery refers to any more, so no call holds locks for long.
--
-- The events a call frees are those of the deliveries it removed: they go
-- by id. Old events that no delivery ever referred to (no webhook matched
-- them) are looked for in received_at order only once no old finished
-- delivery is left: before that, such a scan would pass, at every call, all
-- the old events whose deliveries are still there (a day's expiry of a busy
-- registry is 100,000s of them), and pruning would cost the square of its
-- size. That scan looks at 8 x batch old events a call, in (received_at,
-- id) order from after (orphans_from, orphans_from_id), and says where the
-- next call goes on (orphans_next, orphans_next_id; NULL once it has
-- reached the retention's edge): old events that unfinished deliveries
-- still refer to (a disabled webhook's wait forever), passed at every call
-- by a scan from the oldest, made a call of millions of them outlast
-- db_timeout. The id breaks ties: the events of one ingest batch share
-- their received_at. The janitor makes one pass a round.
CREATE OR REPLACE FUNCTION reghook.prune_history_from(retention interval, batch integer,
                                                      orphans_from timestamptz,
                                                      orphans_from_id bigint,
                                                 OUT pruned integer,
                                                 OUT orphans_next timestamptz,
                                                 OUT orphans_next_id bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz := now() - retention;
    freed bigint[];
    n_deliveries integer;
    n_events integer;
    n_orphans integer := 0;
    n_scanned integer;
    last_at timestamptz;
    last_id bigint;
BEGIN
    orphans_next := orphans_from;
    orphans_next_id := orphans_from_id;
    WITH old AS (
        SELECT d.id FROM reghook.deliveries d
        WHERE d.status IN ('succeeded', 'failed') AND d.completed_at < cutoff
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM reghook.deliveries d USING old WHERE d.id = old.id RETURNING d.event_id
    )
    SELECT count(*), array_agg(DISTINCT gone.event_id) FILTER (WHERE gone.event_id IS NOT NULL)
    INTO n_deliveries, freed FROM gone;

    WITH old AS (
        SELECT e.id FROM reghook.events e
        WHERE e.id = ANY (freed) AND e.received_at < cutoff
          AND NOT EXISTS (SELECT 1 FROM reghook.deliveries d WHERE d.event_id = e.id)
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM reghook.events e USING old WHERE e.id = old.id;
    GET DIAGNOSTICS n_events = ROW_COUNT;

    IF n_deliveries < batch AND n_events < batch THEN
        WITH scanned AS MATERIALIZED (
            SELECT e.id, e.received_at FROM reghook.events e
            WHERE e.received_at < cutoff
              -- the first condition for the index, the second for the ties
              AND e.received_at >= orphans_from
              AND (e.received_at, e.id) > (orphans_from, coalesce(orphans_from_id, 0))
            ORDER BY e.received_at, e.id
            LIMIT 8 * batch
        ), old AS (
            SELECT e.id FROM reghook.events e JOIN scanned s ON s.id = e.id
            WHERE NOT EXISTS (SELECT 1 FROM reghook.deliveries d WHERE d.event_id = e.id)
            LIMIT batch - n_events
            FOR UPDATE OF e SKIP LOCKED
        ), gone AS (
            DELETE FROM reghook.events e USING old WHERE e.id = old.id RETURNING e.id
        )
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM scanned),
               (SELECT s.received_at FROM scanned s ORDER BY s.received_at DESC, s.id DESC
                LIMIT 1),
               (SELECT s.id FROM scanned s ORDER BY s.received_at DESC, s.id DESC LIMIT 1)
        INTO n_orphans, n_scanned, last_at, last_id;
        IF n_orphans = batch - n_events THEN
            -- Room ran out first: the next call looks from the same place.
            NULL;
        ELSIF n_scanned < 8 * batch THEN
            -- The edge reached, all of it looked at: this pass is over.
            orphans_next := NULL;
            orphans_next_id := NULL;
        ELSE
            -- All of the scanned ones looked at: the next call goes on after them.
            orphans_next := last_at;
            orphans_next_id := last_id;
        END IF;
    END IF;
    pruned := n_deliveries + n_events + n_orphans;
END
$$;
COMMENT ON FUNCTION reghook.prune_history_from(interval, integer, timestamptz, bigint) IS
    'Janitor: removes up to batch finished deliveries and unreferenced events older than retention; returns how many, and where its next call looks for unreferenced events.';

-- prune_history: what the janitors of reghook before migration 020 call,
-- also while a newer one has migrated the schema (README, Upgrade): each
-- call looks at the oldest 8 x batch old events for unreferenced ones
-- (theirs looked at all of them); the upgraded janitors do the rest.
CREATE OR REPLACE FUNCTION reghook.prune_history(retention interval, batch integer DEFAULT 500)
RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.pruned FROM reghook.prune_history_from(retention, batch, '-infinity', 0) p
$$;
COMMENT ON FUNCTION reghook.prune_history(interval, integer) IS
    'Janitor of an older reghook: removes up to batch finished deliveries and unreferenced events older than retention; returns how many.';
