-- 020_prune_orphans_from: prune_history() gains a form that looks for old
-- events no delivery refers to a bounded stretch at a time, from where its
-- previous call left off (schema/functions/history.sql); the two-argument
-- form stays, for the janitors of instances not yet upgraded. The function
-- files make both; a three-argument draft of the new form goes.
DROP FUNCTION IF EXISTS reghook.prune_history(interval, integer, timestamptz);
