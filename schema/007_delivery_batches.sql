-- 007_delivery_batches: the dispatcher's queue functions, made cheaper.
--
-- This migration replaced claim_deliveries() and complete_deliveries()
-- (which live in schema/functions/queue.sql now); the new claim returns
-- another row type and the new completion takes its batch as json, which
-- CREATE OR REPLACE cannot do, so a database made before loses the old
-- ones here (a new database never had them).
DROP FUNCTION IF EXISTS reghook.claim_deliveries(text, integer, integer, jsonb, integer);
DROP FUNCTION IF EXISTS reghook.complete_deliveries(text, jsonb);
