-- ingest: from registry event to stored event and deliveries.
--
-- The receiver parses and classifies each envelope in C, then hands a batch
-- of events (from many concurrent requests: group commit) to ingest(), one
-- statement that routes each event to its namespace, enforces the
-- registry source's scope, deduplicates by event id, stores the event and
-- creates its deliveries, all in the one transaction whose commit the
-- receiver waits for before it answers 200.

-- Every function of schema reghook runs with a fixed search_path, so that
-- no schema a caller can write to (public, on older clusters) can put a
-- function or operator in front of pg_catalog's; but the two IMMUTABLE SQL
-- helpers here have none, so that the planner can inline them (the
-- functions that call them have one).

-- All whole-component prefixes of a repository path, longest first:
-- 'a/b/c' gives {a/b/c, a/b, a}.
CREATE OR REPLACE FUNCTION reghook.path_prefixes(path text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(array_to_string(parts[1:k], '/') ORDER BY k DESC), '{}')
    FROM (SELECT string_to_array(path, '/') AS parts) p,
         generate_series(1, cardinality(p.parts)) AS k
$$;
COMMENT ON FUNCTION reghook.path_prefixes(text) IS
    'Whole-component prefixes of a repository path, longest first.';

-- Shell-style glob: * any run of characters, ? one character, all else literal.
CREATE OR REPLACE FUNCTION reghook.glob_match(pattern text, subject text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT subject LIKE replace(replace(replace(replace(replace(pattern,
        '\', '\\'), '%', '\%'), '_', '\_'), '*', '%'), '?', '_')
$$;
COMMENT ON FUNCTION reghook.glob_match(text, text) IS
    'True if subject matches the glob pattern (* any characters, ? one character).';

-- The id of an event's delivery to a webhook, made from them alone: a
-- version 8 UUID (RFC 9562's layout for ids of one's own), the event's
-- timestamp in milliseconds first as in a version 7 (new rows go next to
-- each other in the indexes, 017_time_ordered_ids.sql says why), then 74
-- bits of a SHA-256 of the registry source, the webhook and the registry's
-- event id. The registry posting an event again gives its delivery the same
-- id: a delivery handed over at ingest may reach its endpoint before its
-- commit fails, and the one made from the registry's retry then carries the
-- id the endpoint has seen (X-Reghook-Delivery, webhook-id), so it can tell
-- the two are one, and that id is the one in the history. An event's
-- delivery to a webhook is made once (the event is stored once per source
-- and id, and is retriggered in place), so the id is unique. A timestamp
-- outside 1970 to 10889 takes the nearer end.
CREATE OR REPLACE FUNCTION reghook.event_delivery_id(source bigint, webhook bigint,
                                                     event_uuid text, occurred_at timestamptz)
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT encode(set_bit(set_bit(set_bit(set_bit(set_bit(set_bit(
               overlay(substring(sha256(convert_to(source || '/' || webhook || '/' || event_uuid,
                                                   'UTF8')) FROM 1 FOR 16)
                       PLACING substring(int8send(greatest(0, least(281474976710655,
                           floor(extract(epoch FROM occurred_at) * 1000)))::bigint) FROM 3)
                       FROM 1 FOR 6),
               52, 0), 53, 0), 54, 0), 55, 1), 70, 0), 71, 1), 'hex')::uuid
$$;
COMMENT ON FUNCTION reghook.event_delivery_id(bigint, bigint, text, timestamptz) IS
    'The id of an event''s delivery to a webhook: the event''s time in ms, then a hash of source, webhook and event id.';

-- ingest(batch, instance, ...): stores a batch of classified events and
-- creates their deliveries. batch is a JSON array of objects:
--   i           position in the batch (returned with the outcome)
--   s           registry_sources.id of the poster
--   id          the registry's event id
--   action      push | delete
--   repository  full repository path
--   p           its whole-component prefixes (optional; computed if absent)
--   tag, digest, media_type, request_id, actor   (may be null)
--   ts          event timestamp (ISO 8601)
--   raw         the event as received
-- Returns one row per element, in the order of i: i, its outcome
-- (accepted, duplicate, unrouted, rejected) and the namespace it was routed
-- to (job NULL); then one row per delivery handed to the caller (i,
-- outcome and namespace NULL), with job: what is needed to send it
-- (reghook.delivery_job, as claim_deliveries() returns).
--
-- Handing over: a dispatcher with free slots passes its instance name and
-- the room it holds back for this batch, as it would to claim_deliveries()
-- (max_total in all; per_webhook less what in_flight says it holds of a
-- webhook). New deliveries then start leased to it (in_flight, attempt 1,
-- the claim's lease), up to that room, in the transaction that stores their
-- event: no NOTIFY, no claim, no second row version before the attempt's,
-- and no statement to read them back: the caller may start them as soon
-- as the rows arrive, before the commit (dispatcher/delivery.h says what
-- that costs when the commit fails).
-- Never to a resting webhook (claim_deliveries). The rest wait (pending,
-- NOTIFYed as queue.sql says) and are claimed as before; a webhook's older deliveries
-- that are due go with claims meanwhile, which the dispatcher leaves half of
-- each webhook's free window while batches hand over (delivery.c). With
-- instance NULL, nothing is handed over.
-- Why: a claim of new deliveries cost PostgreSQL about as much as storing
-- their events, and the NOTIFY and the claim's round trip were most of the
-- time from an event's commit to its request; reading the handed
-- deliveries back took a round trip of its own (README, Benchmarks).
--
-- plpgsql, not sql: its statement's plan is cached for the session, where
-- an sql function's would be planned again at every call. It waits at most
-- 5 s for a row lock a person holds (queue.sql says why).
-- The cached plan is the generic one from the first call (plan_cache_mode):
-- the plan cache would otherwise plan the statement again at each of a
-- session's first five calls (4-10 ms each) before it settled on the
-- generic plan, as it does for this statement. The receiver calls it once with an empty batch as
-- each connection comes up, so that no registry's request waits for that
-- first planning (dispatcher/ingest.c).
CREATE OR REPLACE FUNCTION reghook.ingest(batch jsonb, instance text, max_total integer,
                                          per_webhook integer, in_flight jsonb,
                                          default_timeout_ms integer)
RETURNS TABLE (i integer, outcome text, namespace text, job reghook.delivery_job)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s'
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT x.*
        FROM jsonb_to_recordset(batch) AS x(i integer, s bigint, id text, action text,
            repository text, p text[], tag text, digest text, media_type text,
            request_id text, actor text, ts timestamptz, raw jsonb)
    ),
    -- The first digest of each delete request in the batch, by source and
    -- repository, for the tag deletes of the same request (one look-up
    -- each, not a scan of the batch each).
    batch_digests AS (
        SELECT DISTINCT ON (x.s, x.request_id, x.repository)
               x.s, x.request_id, x.repository, x.digest
        FROM input x
        WHERE x.action = 'delete' AND nullif(x.digest, '') IS NOT NULL
          AND nullif(x.request_id, '') IS NOT NULL
        ORDER BY x.s, x.request_id, x.repository, x.i
    ),
    routed AS (
        SELECT input.*, r.namespace_id, r.namespace, r.name,
               -- A scope entry covers its namespace and the namespaces below it.
               (src.namespaces IS NULL
                OR EXISTS (SELECT 1 FROM unnest(src.namespaces) AS sc
                           WHERE r.namespace = sc
                              OR left(r.namespace, length(sc) + 1) = sc || '/')) AS allowed,
               -- One row per (source, event id) is stored: the first in the batch.
               row_number() OVER (PARTITION BY input.s, input.id ORDER BY input.i) AS nth
        FROM input
        JOIN reghook.registry_sources src ON src.id = input.s
        -- The longest registered namespace that is a whole-component prefix of
        -- the path; the receiver sends the path's prefixes (p).
        LEFT JOIN LATERAL (
            SELECT n.id AS namespace_id, n.name AS namespace,
                   CASE WHEN n.name = input.repository THEN ''
                        ELSE substr(input.repository, length(n.name) + 2) END AS name
            FROM reghook.namespaces n
            WHERE n.name = ANY (coalesce(input.p, reghook.path_prefixes(input.repository)))
            ORDER BY length(n.name) DESC
            LIMIT 1) r ON true
    ),
    stored AS (
        INSERT INTO reghook.events AS e (source_id, event_uuid, namespace_id, repository, name,
            action, tag, digest, media_type, request_id, actor, occurred_at, raw)
        SELECT r.s, r.id, r.namespace_id, r.repository, r.name, r.action,
               nullif(r.tag, ''),
               coalesce(nullif(r.digest, ''),
                   -- A tag delete carries the digest of the delete-by-digest
                   -- request it belongs to: stored earlier, or in this batch.
                   -- The same request deletes in one repository: a digest
                   -- is taken from a delete of the same source and
                   -- repository only (so from an event stored, or stored
                   -- with this one: routed and allowed alike), the first.
                   -- Only deletes that carry a digest are in the index, so
                   -- tag deletes sharing a request id without one cost
                   -- nothing each (events_delete_digest, migration 021).
                   CASE WHEN r.action = 'delete' AND nullif(r.request_id, '') IS NOT NULL THEN
                       coalesce(
                           (SELECT p.digest FROM reghook.events p
                            WHERE p.source_id = r.s AND p.request_id = r.request_id
                              AND p.repository = r.repository
                              AND p.action = 'delete' AND p.digest IS NOT NULL
                            ORDER BY p.id
                            LIMIT 1),
                           bd.digest)
                   END),
               nullif(r.media_type, ''), nullif(r.request_id, ''), coalesce(r.actor, ''),
               r.ts, r.raw
        FROM routed r
        LEFT JOIN batch_digests bd
            ON bd.s = r.s AND bd.request_id = r.request_id AND bd.repository = r.repository
        WHERE r.namespace_id IS NOT NULL AND r.allowed AND r.nth = 1
        ON CONFLICT (source_id, event_uuid) DO NOTHING
        RETURNING e.id, e.source_id, e.event_uuid, e.namespace_id, e.name, e.action, e.tag,
                  e AS event
    ),
    -- The webhooks each stored event goes to, and whether the caller has room for its delivery.
    matched AS (
        SELECT st.id AS event_id, st.action, st.event, w.id AS webhook_id,
               instance IS NOT NULL
               AND w.failures_in_a_row < 20
               AND row_number() OVER (PARTITION BY w.id ORDER BY st.id)
                   <= per_webhook - coalesce((in_flight ->> w.id::text)::integer, 0) AS room,
               now() + make_interval(
                   secs => (coalesce(w.timeout_ms, default_timeout_ms) + 15000) / 1000.0) AS lease
        FROM stored st
        JOIN reghook.webhooks w ON w.namespace_id = st.namespace_id AND w.enabled
        WHERE st.action = ANY (w.actions)
          -- An untagged manifest push (a platform child of an index) is kept
          -- but announces nothing.
          AND NOT (st.action = 'push' AND st.tag IS NULL)
          AND reghook.glob_match(w.repository_glob, st.name)
          AND (w.tag_glob = '*' OR reghook.glob_match(w.tag_glob, st.tag))
    ),
    -- Handed over: those with room, up to max_total in all. The values of
    -- each new delivery are made here, once (split is read twice, so it is
    -- materialized), for its row and for its job: the job is built from them,
    -- not from the inserted row, which would need a join of the two
    -- statements' results that the planner, blind to their sizes, makes a
    -- nested loop (quadratic in the batch).
    split AS (
        SELECT m.*, reghook.event_delivery_id((m.event).source_id, m.webhook_id,
                                               (m.event).event_uuid, (m.event).occurred_at) AS id,
               reghook.new_callback_token() AS token,
               m.room AND row_number() OVER (PARTITION BY m.room
                                             ORDER BY m.event_id, m.webhook_id)
                          <= max_total AS handed
        FROM matched m
    ),
    -- A data-modifying CTE runs to completion whether or not it is read.
    delivered AS (
        INSERT INTO reghook.deliveries (id, webhook_id, event_id, action, status, attempts,
                                        lease_owner, lease_expires_at, callback_token)
        SELECT m.id, m.webhook_id, m.event_id, m.action,
               CASE WHEN m.handed THEN 'in_flight' ELSE 'pending' END,
               CASE WHEN m.handed THEN 1 ELSE 0 END,
               CASE WHEN m.handed THEN instance END,
               CASE WHEN m.handed THEN m.lease END,
               m.token
        FROM split m
    ),
    outcomes AS (
        SELECT r.i,
               CASE WHEN r.namespace_id IS NULL THEN 'unrouted'
                    WHEN NOT r.allowed THEN 'rejected'
                    WHEN st.id IS NOT NULL THEN 'accepted'
                    ELSE 'duplicate' END AS outcome,
               r.namespace
        FROM routed r
        LEFT JOIN stored st ON st.source_id = r.s AND st.event_uuid = r.id AND r.nth = 1
        ORDER BY r.i
    )
    SELECT o.i, o.outcome, o.namespace, NULL::reghook.delivery_job FROM outcomes o
    UNION ALL
    -- Attempt 1 of a new delivery (round_start 0, created now()), as inserted.
    SELECT NULL, NULL, NULL, ROW(j.*)::reghook.delivery_job
    FROM split m
    CROSS JOIN LATERAL reghook.job_of(m.id, 1, 0, m.action, false, m.token, m.webhook_id, now(),
                                      m.event) j
    WHERE m.handed;
END
$$;
COMMENT ON FUNCTION reghook.ingest(jsonb, text, integer, integer, jsonb, integer) IS
    'Stores a batch of classified registry events (deduplicated) and creates their deliveries, handing new ones to the calling dispatcher within its room; returns each event''s outcome.';

