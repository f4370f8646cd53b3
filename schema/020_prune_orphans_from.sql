-- 020_prune_orphans_from: prune_history() looks for old events no delivery
-- refers to a bounded stretch at a time, from where its previous call left
-- off (schema/functions/history.sql), so it takes where to start and says
-- where to go on: its signature changes, and the function file makes it
-- again.
DROP FUNCTION IF EXISTS reghook.prune_history(interval, integer);
