-- retrigger: queueing deliveries again, by hand.
--
-- A retriggered delivery keeps its id (X-Reghook-Delivery) and its attempt
-- numbers continue; it gets a new round of max_attempts attempts with the
-- retry schedule from its start (deliveries.round_start marks where the
-- round began). A delivery that waits for its next attempt (minutes or
-- hours away on the default schedule) can have that attempt made due now,
-- within its round: what to do after fixing a webhook's URL. The UPDATE's
-- NOTIFY (queue.sql) wakes the dispatchers.

-- retrigger(delivery): a finished delivery is queued again at once, with a
-- new round of attempts; a pending one waiting for its next attempt has
-- that attempt moved to now, within its round.
CREATE OR REPLACE FUNCTION reghook.retrigger(delivery_id uuid) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d record;
    webhook bigint := (SELECT x.webhook_id FROM reghook.deliveries x
                       WHERE x.id = retrigger.delivery_id);
BEGIN
    -- Whether the caller may see it comes before its row is locked: a row
    -- of another namespace, held by its dispatcher or its people, held the
    -- caller up (or timed its lock out), telling it the delivery exists.
    IF webhook IS NULL OR reghook.access_level(
            (SELECT namespace_id FROM reghook.webhooks WHERE id = webhook), session_user) = 0 THEN
        RAISE EXCEPTION 'delivery % does not exist', coalesce(delivery_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    SELECT x.id, x.status, x.webhook_id, x.next_attempt_at, w.enabled, w.disabled_reason INTO d
    FROM reghook.deliveries x JOIN reghook.webhooks w ON w.id = x.webhook_id
    WHERE x.id = retrigger.delivery_id
    FOR UPDATE OF x;
    IF d.id IS NULL THEN  -- removed meanwhile, with its webhook
        RAISE EXCEPTION 'delivery % does not exist', delivery_id USING ERRCODE = 'no_data_found';
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

-- require_enabled_webhook(webhook): contributor access to the webhook
-- (require_webhook), and the webhook enabled: what queueing its deliveries
-- again needs.
CREATE OR REPLACE FUNCTION reghook.require_enabled_webhook(webhook bigint) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w record;
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    SELECT x.enabled, x.disabled_reason INTO w FROM reghook.webhooks x WHERE x.id = webhook;
    IF NOT w.enabled THEN
        RAISE EXCEPTION 'webhook % is disabled (%): enable it first', webhook,
            coalesce(w.disabled_reason, 'no reason given')
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;

-- retrigger_failed(webhook, since): every failed delivery of a webhook,
-- or those that failed since a time. Returns how many were queued.
CREATE OR REPLACE FUNCTION reghook.retrigger_failed(webhook_id bigint, since timestamptz DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    PERFORM reghook.require_enabled_webhook(webhook_id);
    UPDATE reghook.deliveries x
    SET status = 'pending', next_attempt_at = now(), completed_at = NULL, round_start = x.attempts,
        retriggered_at = now(), retriggered_by = session_user
    WHERE x.webhook_id = retrigger_failed.webhook_id AND x.status = 'failed'
      AND (since IS NULL OR x.completed_at >= since);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION reghook.retrigger_failed(bigint, timestamptz) IS
    'Queues again every failed delivery of a webhook (those completed at or after since, if given); returns how many. '
    'Contributors.';

-- retry_waiting(webhook): the next attempt of every delivery of the webhook
-- that waits for it becomes due now (the UPDATE's NOTIFY wakes the
-- dispatchers). Returns how many. What to run after fixing a webhook.
CREATE OR REPLACE FUNCTION reghook.retry_waiting(webhook_id bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    PERFORM reghook.require_enabled_webhook(webhook_id);
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
