-- 014_history_autovacuum: the janitor prunes a day of history at a time
-- (a thirtieth of it, with the default history_retention of 30 days), and
-- autovacuum's default threshold (20% of a table dead) left those rows
-- dead for six days, so the space they took was not reused and the tables
-- grew by the rows written meanwhile (tests/bench/history.py, README's
-- Benchmarks). At 2% the space a day's pruning frees is vacuumed, and
-- reused, the same day.
ALTER TABLE reghook.events SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE reghook.deliveries SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE reghook.delivery_attempts SET (autovacuum_vacuum_scale_factor = 0.02);
