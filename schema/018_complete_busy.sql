-- 018_complete_busy: complete_deliveries() also returns the deliveries
-- whose rows another transaction holds, instead of waiting for them, and
-- those not there (schema/functions/queue.sql), so its result type
-- changes; the function is made again with the others after the
-- migrations.
DROP FUNCTION IF EXISTS reghook.complete_deliveries(text, json);
