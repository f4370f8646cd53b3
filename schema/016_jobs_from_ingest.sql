-- 016_jobs_from_ingest: ingest() returns the deliveries it hands over with
-- what is needed to send them (a reghook.delivery_job per row), so that the
-- dispatcher starts them when the commit is confirmed, without a statement
-- to read them back (schema/functions/ingest.sql). Its result type
-- changes: the old definition goes, and the function file makes it again.
DROP FUNCTION IF EXISTS reghook.ingest(jsonb, text, integer, integer, jsonb, integer);
