-- 020_prune_orphans_from: prune_history_from() looks for old events no
-- delivery refers to a bounded stretch at a time, from where its previous
-- call left off (schema/functions/history.sql); prune_history() stays, for
-- the janitors of instances not yet upgraded. The function files make
-- both; the drafts of the new function under the old name go.
DROP FUNCTION IF EXISTS reghook.prune_history(interval, integer, timestamptz);
DROP FUNCTION IF EXISTS reghook.prune_history(interval, integer, timestamptz, bigint);
