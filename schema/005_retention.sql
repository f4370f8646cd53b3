-- 005_retention: pruning delivery history older than history_retention.
--
-- The janitor calls prune_history() repeatedly, each call removing at most
-- `batch` finished deliveries (with their attempts) and `batch` events that
-- no delivery refers to any more, so no call holds locks for long.

CREATE FUNCTION reghook.prune_history(retention interval, batch integer DEFAULT 500)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n_deliveries integer;
    n_events integer;
BEGIN
    WITH old AS (
        SELECT d.id FROM reghook.deliveries d
        WHERE d.status IN ('succeeded', 'failed') AND d.completed_at < now() - retention
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM reghook.deliveries d USING old WHERE d.id = old.id;
    GET DIAGNOSTICS n_deliveries = ROW_COUNT;

    WITH old AS (
        SELECT e.id FROM reghook.events e
        WHERE e.received_at < now() - retention
          AND NOT EXISTS (SELECT 1 FROM reghook.deliveries d WHERE d.event_id = e.id)
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM reghook.events e USING old WHERE e.id = old.id;
    GET DIAGNOSTICS n_events = ROW_COUNT;
    RETURN n_deliveries + n_events;
END
$$;
COMMENT ON FUNCTION reghook.prune_history(interval, integer) IS
    'Janitor: removes up to batch finished deliveries and unreferenced events older than retention; returns how many.';

CREATE INDEX deliveries_completed ON reghook.deliveries (completed_at)
    WHERE status IN ('succeeded', 'failed');
CREATE INDEX events_received ON reghook.events (received_at);
