-- 009_retry_now: "retry now" for deliveries waiting for their next attempt,
-- and the endpoints' callback reports in the delivery history.
--
-- A delivery that failed and waits for its next attempt (minutes or hours
-- away on the default schedule) could not be sent again: retrigger()
-- refused it as pending, and retrigger_failed() finds only failed ones. So
-- after fixing a webhook's URL, its deliveries still waited out the
-- schedule. retrigger() now also moves a waiting delivery's next attempt to
-- now, and retry_waiting() does so for every waiting delivery of a webhook.

-- retrigger(delivery): a finished delivery is queued again at once, with a
-- new round of attempts (as before); a pending one waiting for its next
-- attempt has that attempt moved to now, within its round.
CREATE OR REPLACE FUNCTION reghook.retrigger(delivery_id uuid) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d record;
BEGIN
    SELECT x.id, x.status, x.webhook_id, x.next_attempt_at, w.enabled, w.disabled_reason INTO d
    FROM reghook.deliveries x JOIN reghook.webhooks w ON w.id = x.webhook_id
    WHERE x.id = retrigger.delivery_id
    FOR UPDATE OF x;
    IF d.id IS NULL OR reghook.access_level(
            (SELECT namespace_id FROM reghook.webhooks WHERE id = d.webhook_id), session_user) = 0 THEN
        RAISE EXCEPTION 'delivery % does not exist', coalesce(delivery_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM reghook.require_webhook(d.webhook_id, 2);
    IF d.status = 'in_flight' THEN
        RAISE EXCEPTION 'delivery % is in flight: an attempt is running now', delivery_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT d.enabled THEN
        RAISE EXCEPTION 'webhook % is disabled (%): enable it first', d.webhook_id,
            coalesce(d.disabled_reason, 'no reason given')
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF d.status = 'pending' THEN
        UPDATE reghook.deliveries x
        SET next_attempt_at = now(), retriggered_at = now(), retriggered_by = session_user
        WHERE x.id = d.id AND x.next_attempt_at > now();
        RETURN d.id;
    END IF;
    UPDATE reghook.deliveries x
    SET status = 'pending', next_attempt_at = now(), completed_at = NULL, round_start = x.attempts,
        retriggered_at = now(), retriggered_by = session_user
    WHERE x.id = d.id;
    RETURN d.id;
END
$$;
COMMENT ON FUNCTION reghook.retrigger(uuid) IS
    'Queues a succeeded or failed delivery again at once, keeping its id (attempts continue numbering), '
    'or makes the next attempt of a delivery waiting for it due now. Contributors.';

-- retry_waiting(webhook): the next attempt of every delivery of the webhook
-- that waits for it becomes due now (the UPDATE's NOTIFY wakes the
-- dispatchers). Returns how many. What to run after fixing a webhook.
CREATE FUNCTION reghook.retry_waiting(webhook_id bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w record;
    n integer;
BEGIN
    PERFORM reghook.require_webhook(webhook_id, 2);
    SELECT x.enabled, x.disabled_reason INTO w FROM reghook.webhooks x WHERE x.id = retry_waiting.webhook_id;
    IF NOT w.enabled THEN
        RAISE EXCEPTION 'webhook % is disabled (%): enable it first', webhook_id,
            coalesce(w.disabled_reason, 'no reason given')
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE reghook.deliveries x
    SET next_attempt_at = now(), retriggered_at = now(), retriggered_by = session_user
    WHERE x.webhook_id = retry_waiting.webhook_id AND x.status = 'pending' AND x.next_attempt_at > now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION reghook.retry_waiting(bigint) IS
    'Makes the next attempt of every delivery of a webhook that waits for one due now; returns how many. '
    'Contributors.';

-- Whoever may run retrigger_failed() may run retry_waiting(): its grants
-- are copied, so that this migration names no role.
REVOKE ALL ON FUNCTION reghook.retry_waiting(bigint) FROM PUBLIC;
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT a.grantee::regrole AS grantee
             FROM pg_proc p, aclexplode(p.proacl) a
             WHERE p.oid = 'reghook.retrigger_failed(bigint, timestamptz)'::regprocedure
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION reghook.retry_waiting(bigint) TO %s', g.grantee);
    END LOOP;
END
$$;

-- Pending deliveries waiting for their next attempt, by webhook, for retry_waiting().
CREATE INDEX deliveries_waiting ON reghook.deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';

-- delivery_history, as in 006, with what the endpoint reported through its
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
       d.callback_at
FROM reghook.deliveries d
JOIN reghook.webhooks w ON w.id = d.webhook_id
JOIN reghook.namespaces n ON n.id = w.namespace_id
LEFT JOIN reghook.events e ON e.id = d.event_id
LEFT JOIN reghook.delivery_attempts a ON a.delivery_id = d.id AND a.webhook_id = d.webhook_id;
COMMENT ON COLUMN reghook.delivery_history.callback_state IS
    'What the endpoint reported through callback_url: success, failure or error; NULL if nothing.';
COMMENT ON COLUMN reghook.delivery_history.callback_description IS 'The description it reported.';
COMMENT ON COLUMN reghook.delivery_history.callback_context IS 'The context it reported.';
COMMENT ON COLUMN reghook.delivery_history.callback_target_url IS 'The target_url it reported.';
COMMENT ON COLUMN reghook.delivery_history.callback_at IS 'When it last reported.';
