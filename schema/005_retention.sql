-- 005_retention: pruning delivery history older than history_retention
-- (prune_history(): schema/functions/history.sql), by the time a delivery
-- was completed and an event received.

CREATE INDEX deliveries_completed ON reghook.deliveries (completed_at)
    WHERE status IN ('succeeded', 'failed');
CREATE INDEX events_received ON reghook.events (received_at);
