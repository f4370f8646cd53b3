-- 013_one_pending_index: 009 made deliveries_waiting, the same partial
-- index as 001's deliveries_due ((webhook_id, next_attempt_at) WHERE
-- status = 'pending'), so every insert and update of a delivery kept two
-- copies of it. The claim, retry_waiting and the due gauge all use the one
-- left.
DROP INDEX IF EXISTS reghook.deliveries_waiting;
