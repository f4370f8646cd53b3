-- 015_delivery_job: what the dispatcher needs to send a delivery is one
-- type, returned by claim_deliveries() and by leased_deliveries(), which
-- reads back the deliveries that ingest() hands to the dispatcher whose
-- batch stored their events (schema/functions/ingest.sql, queue.sql).
-- claim_deliveries() is made again with it (queue.sql). ingest() takes the
-- caller's instance and room now (ingest.sql): its one-argument form goes.
CREATE TYPE reghook.delivery_job AS (
    delivery_id uuid, attempt integer, round_start integer, action text, is_test boolean,
    callback_token text, webhook_id bigint, url text, method text, content_type text,
    username text, password text, secret text, format text, timeout_ms integer,
    max_attempts integer, headers text, repository text, name text, tag text, digest text,
    actor text, occurred_at bigint, raw text, namespace text, description text,
    is_private boolean, namespace_created_at bigint, event_uuid text, event_time text,
    media_type text, size bigint, source_name text, template text);
COMMENT ON TYPE reghook.delivery_job IS
    'A leased delivery with what the dispatcher needs to send it (claim_deliveries, leased_deliveries).';
DROP FUNCTION IF EXISTS reghook.claim_deliveries(text, integer, integer, jsonb, integer);
DROP FUNCTION IF EXISTS reghook.ingest(jsonb);
