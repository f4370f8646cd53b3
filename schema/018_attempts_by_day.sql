-- 018_attempts_by_day: delivery_attempts is partitioned by attempted_at,
-- one partition per UTC day, so that retention drops a day's attempts
-- (three quarters of the history's pages) as a file instead of deleting
-- them row by row: each deleted row wrote its page again, all of it into
-- the WAL after each checkpoint, and the commits of the events arriving
-- meanwhile waited behind those writes (README, Benchmarks: the history
-- benchmark). The day partitions are made ahead and dropped by
-- keep_attempt_partitions() (schema/functions/history.sql), which the
-- janitor calls at each round before prune_history().
--
-- A partitioned table's unique indexes must hold its partition key, so the
-- primary key (delivery_id, attempt) becomes each partition's own; the two
-- other indexes are the parent's, and so every partition's. Rows no day
-- partition holds (attempted_at before the first one, or after the last
-- made) go to delivery_attempts_default, pruned row by row as before.
--
-- No foreign key: a partition made or dropped with one would lock
-- deliveries against the ingest's inserts while it is made (SHARE ROW
-- EXCLUSIVE). The attempts of deleted deliveries go with them by a
-- statement trigger on deliveries instead (schema/functions/history.sql),
-- once per statement where the key's cascade went row by row.
--
-- The table there was becomes a partition as it is, holding every row
-- attempted before the next UTC midnight (or the one after its newest
-- row), and goes whole once its newest day has expired. No row is copied
-- and its indexes are kept, but ATTACH reads the whole table to check its
-- rows' times, holding it locked meanwhile (README, Upgrade, says how long).
-- Empty (a new database), it is dropped instead.
--
-- The views on it are made again by schema/functions/history.sql.
DROP VIEW IF EXISTS reghook.delivery_history;
DROP VIEW IF EXISTS reghook.webhook_health;
ALTER TABLE reghook.delivery_attempts RENAME TO delivery_attempts_upgraded;
ALTER TABLE reghook.delivery_attempts_upgraded RENAME CONSTRAINT delivery_attempts_pkey
    TO delivery_attempts_upgraded_pkey;
ALTER INDEX reghook.delivery_attempts_time RENAME TO delivery_attempts_upgraded_time;
ALTER INDEX reghook.delivery_attempts_webhook_time RENAME TO delivery_attempts_upgraded_webhook_time;

ALTER TABLE reghook.delivery_attempts_upgraded DROP CONSTRAINT delivery_attempts_delivery_id_fkey;

CREATE TABLE reghook.delivery_attempts (
    delivery_id      uuid NOT NULL,
    attempt          integer NOT NULL,
    webhook_id       bigint NOT NULL,
    attempted_at     timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    method           text NOT NULL,
    url              text NOT NULL,
    request_headers  jsonb NOT NULL,
    request_body     text,
    response_status  integer,
    response_headers jsonb,
    response_body    bytea,
    response_truncated boolean NOT NULL DEFAULT false,
    error_class      text CONSTRAINT delivery_attempts_error_class_check
        CHECK (error_class IN ('dns', 'connect', 'tls', 'timeout', 'blocked', 'http', 'other')),
    error_message    text,
    instance         text NOT NULL,
    format           text
) PARTITION BY RANGE (attempted_at);
CREATE INDEX delivery_attempts_webhook_time ON reghook.delivery_attempts (webhook_id, attempted_at DESC);
CREATE INDEX delivery_attempts_time ON reghook.delivery_attempts (attempted_at);

CREATE TABLE reghook.delivery_attempts_default PARTITION OF reghook.delivery_attempts DEFAULT
    WITH (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE reghook.delivery_attempts_default ADD CONSTRAINT delivery_attempts_default_pkey
    PRIMARY KEY (delivery_id, attempt);
ALTER TABLE reghook.delivery_attempts_default ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    -- After its newest row too (read from its index), should a clock have
    -- put one in the future.
    midnight timestamptz := date_trunc('day', greatest(now(), (SELECT max(a.attempted_at)
                                                              FROM reghook.delivery_attempts_upgraded a)),
                                       'UTC') + interval '1 day';
BEGIN
    IF EXISTS (SELECT 1 FROM reghook.delivery_attempts_upgraded) THEN
        EXECUTE format('ALTER TABLE reghook.delivery_attempts ATTACH PARTITION reghook.delivery_attempts_upgraded '
                       'FOR VALUES FROM (MINVALUE) TO (%L)', midnight);
        EXECUTE format('ALTER TABLE reghook.delivery_attempts_upgraded RENAME TO %I',
                       'delivery_attempts_before_' || to_char(midnight AT TIME ZONE 'UTC', 'YYYYMMDD'));
    ELSE
        DROP TABLE reghook.delivery_attempts_upgraded;
    END IF;
END
$$;

COMMENT ON TABLE reghook.delivery_attempts IS
    'Every try at a delivery, as sent and as answered; partitioned by the UTC day of attempted_at.';
COMMENT ON COLUMN reghook.delivery_attempts.delivery_id IS 'The delivery tried.';
COMMENT ON COLUMN reghook.delivery_attempts.attempt IS 'Attempt number, from 1; continues after a retrigger.';
COMMENT ON COLUMN reghook.delivery_attempts.webhook_id IS
    'The webhook (copied from the delivery, for fast history per webhook).';
COMMENT ON COLUMN reghook.delivery_attempts.attempted_at IS 'When the request started.';
COMMENT ON COLUMN reghook.delivery_attempts.duration_ms IS
    'From start to the last byte of the answer, or to the failure.';
COMMENT ON COLUMN reghook.delivery_attempts.method IS 'HTTP method sent.';
COMMENT ON COLUMN reghook.delivery_attempts.url IS 'URL requested, without credentials.';
COMMENT ON COLUMN reghook.delivery_attempts.request_headers IS
    'Headers sent, as [[name, value], ...]; Authorization and signatures redacted.';
COMMENT ON COLUMN reghook.delivery_attempts.request_body IS 'Body sent, if any.';
COMMENT ON COLUMN reghook.delivery_attempts.response_status IS 'HTTP status answered; NULL on a transport failure.';
COMMENT ON COLUMN reghook.delivery_attempts.response_headers IS 'Headers answered, as [[name, value], ...].';
COMMENT ON COLUMN reghook.delivery_attempts.response_body IS 'The first response_body_limit bytes of the answer.';
COMMENT ON COLUMN reghook.delivery_attempts.response_truncated IS 'The answer was longer than response_body_limit.';
COMMENT ON COLUMN reghook.delivery_attempts.error_class IS
    'For a failure: dns, connect, tls, timeout, blocked (refused target), http (non-2xx or redirect), other.';
COMMENT ON COLUMN reghook.delivery_attempts.error_message IS 'What went wrong, for a person.';
COMMENT ON COLUMN reghook.delivery_attempts.instance IS 'The dispatcher instance that made the attempt.';
COMMENT ON COLUMN reghook.delivery_attempts.format IS
    'The payload format the attempt was sent in; NULL for an attempt made before 012 or lost with its dispatcher.';
