-- 009_retry_now: "retry now" for deliveries waiting for their next attempt,
-- and the endpoints' callback reports in the delivery history.
--
-- This migration made retry_waiting() and the new retrigger() and
-- delivery_history, which live in schema/functions/ now (retrigger.sql,
-- history.sql); what is left is the index retry_waiting() reads.

-- Pending deliveries waiting for their next attempt, by webhook, for retry_waiting().
CREATE INDEX deliveries_waiting ON reghook.deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
