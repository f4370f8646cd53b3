-- The history of tests/bench/history.py, made in SQL: :events events over
-- the 30 days before now, each delivered to the two webhooks of its
-- namespace whose repository_glob names its repository (1,000 webhooks in
-- 50 namespaces, one in fifty disabled), and their attempts on the default
-- retry schedule (0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h). Of every
-- 100 deliveries 92 succeed at once, 4 at the second attempt, 2 at the
-- third, 1 at the fourth and 1 fails all 8 (on average 1.18 attempts); a
-- delivery whose next attempt is still to come is pending.
--
-- Run by psql as a superuser on a migrated database with no events, with
-- -v events=N -v source=ID -v first=F -v last=L: the namespaces and
-- webhooks when first is 1, and events first .. last with their
-- deliveries and attempts (two psql at once make two halves). The caller
-- has dropped the indexes and keys of events, deliveries and
-- delivery_attempts, and makes them again after it (faster than keeping
-- them up row by row), and sets the events' sequence.
--
-- Delivery ids and callback tokens are made of hashint8extended() of the
-- delivery's number (random-looking, and cheaper than md5()), and so are event ids and digests, so that an
-- attempt finds its delivery's id without a join.
\set ON_ERROR_STOP 1
SET session_replication_role = replica; -- no foreign key checks, no NOTIFY triggers

SELECT :first = 1 AS make_webhooks \gset
\if :make_webhooks
INSERT INTO reghook.namespaces (name, description)
SELECT 'team-' || lpad(n::text, 2, '0'), 'bench namespace ' || n FROM generate_series(0, 49) n;

INSERT INTO reghook.webhooks (namespace_id, name, url, repository_glob, enabled, disabled_reason,
                              created_at, last_success_at, failures_in_a_row)
SELECT ns.id, 'hook-' || w, 'https://hooks.example.com/' || ns.name || '/hook-' || w,
       'app-' || ((w - 1) % 10), w % 50 <> 0,
       CASE WHEN w % 50 = 0 THEN 'endpoint answered 410 Gone' END,
       now() - interval '60 days', CASE WHEN w % 50 <> 0 THEN now() - interval '10 seconds' END, 0
FROM generate_series(1, 1000) w
JOIN reghook.namespaces ns ON ns.name = 'team-' || lpad(((w - 1) / 20)::text, 2, '0')
ORDER BY w;
\endif

-- Event e (1 ..:events) is received at t0 + e * step; its namespace, repository and webhooks:
CREATE TEMP VIEW gen_events AS
SELECT e, now() - interval '30 days' + (e - 1) * (interval '30 days' / :events) AS t,
       (e % 50) AS ns, ((e / 50) % 10) AS r
FROM generate_series(:first, :last) e;

INSERT INTO reghook.events (id, source_id, event_uuid, namespace_id, repository, name, action, tag,
                            digest, media_type, request_id, actor, occurred_at, received_at, raw)
OVERRIDING SYSTEM VALUE
SELECT e, :source, h.uid, ns.id, ns.name || '/app-' || r, 'app-' || r, 'push', 'v1.' || e, h.digest,
       'application/vnd.oci.image.manifest.v1+json', h.req, 'ci-bot', t - interval '80 ms', t,
       ('{"id":"' || h.uid || '","timestamp":"' || t || '","action":"push","target":'
        '{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1573,"digest":"' || h.digest
        || '","length":1573,"repository":"' || ns.name || '/app-' || r
        || '","url":"https://registry.example.com/v2/' || ns.name || '/app-' || r || '/manifests/' || h.digest
        || '","tag":"v1.' || e || '"},"request":{"id":"' || h.req
        || '","addr":"10.0.4.17:41234","host":"registry.example.com",'
        '"method":"PUT","useragent":"buildkit/v0.12"},"actor":{"name":"ci-bot"},"source":'
        '{"addr":"registry-0:5000","instanceID":"afb33126-3a97-4354-8d36-b8fb91f8910d"}}')::jsonb
FROM gen_events
JOIN reghook.namespaces ns ON ns.name = 'team-' || lpad(gen_events.ns::text, 2, '0'),
LATERAL (SELECT x.hex::uuid::text AS uid, 'sha256:' || x.hex || y.hex AS digest, y.hex::uuid::text AS req
         FROM (SELECT lpad(to_hex(hashint8extended(e, 7)), 16, '0') || lpad(to_hex(hashint8extended(e, 8)), 16, '0')
                      AS hex) x,
              (SELECT lpad(to_hex(hashint8extended(e, 9)), 16, '0') || lpad(to_hex(hashint8extended(e, 10)), 16, '0')
                      AS hex) y) h;

-- Delivery i (0 .. 2 * :events - 1) is event i / 2 + 1's to webhook
-- ns * 20 + r + 1 (i even) or + 11 (i odd); n its planned attempts, made
-- those whose time has come.
CREATE TEMP VIEW gen_deliveries AS
SELECT g.*, g.t + off[n] * interval '1 s' AS last_at,
       (lpad(to_hex(hashint8extended(i, 1)), 16, '0') || lpad(to_hex(hashint8extended(i, 2)), 16, '0'))::uuid AS id,
       CASE WHEN g.t + off[n] * interval '1 s' <= now() THEN n
            ELSE (SELECT count(*) FROM unnest(off[1:n]) o WHERE g.t + o * interval '1 s' <= now())::int END AS made
FROM (SELECT i, ge.e, ge.t, ge.ns * 20 + ge.r + 1 + (i % 2) * 10 AS wh,
             CASE WHEN m < 92 THEN 1 WHEN m < 96 THEN 2 WHEN m < 98 THEN 3 WHEN m < 99 THEN 4 ELSE 8 END AS n,
             '{0,5,305,2105,9305,27305,63305,99305}'::int[] AS off
      FROM gen_events ge, generate_series(2 * ge.e::bigint - 2, 2 * ge.e::bigint - 1) i,
           LATERAL (SELECT (i * 7919 + i / 1000) % 100 AS m) mm) g;

INSERT INTO reghook.deliveries (id, webhook_id, event_id, action, status, attempts, next_attempt_at,
                                created_at, completed_at, last_error, callback_token)
SELECT id, wh, e, 'push',
       CASE WHEN made < n THEN 'pending' WHEN n = 8 THEN 'failed' ELSE 'succeeded' END, made,
       CASE WHEN made < n THEN t + off[made + 1] * interval '1 s' ELSE last_at END, t,
       CASE WHEN made = n THEN last_at + interval '45 ms' END,
       CASE WHEN n = 8 AND made = n THEN 'HTTP 503' END,
       lpad(to_hex(hashint8extended(i, 3)), 16, '0') || lpad(to_hex(hashint8extended(i, 4)), 16, '0')
       || lpad(to_hex(hashint8extended(i, 5)), 16, '0') || lpad(to_hex(hashint8extended(i, 6)), 16, '0')
FROM gen_deliveries;

-- Attempt k of delivery i: the last of a delivery that succeeds answers
-- 200; the others fail, five ways.
INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at, duration_ms, method, url,
                                       request_headers, request_body, response_status, response_headers,
                                       response_body, error_class, error_message, instance, format)
SELECT id, k, wh, t + off[k] * interval '1 s' + interval '3 ms', 20 + (i + k) % 180, 'POST',
       'https://hooks.example.com/team-' || lpad(((wh - 1) / 20)::text, 2, '0') || '/hook-' || wh,
       ('[["Content-Type","application/json"],["User-Agent","reghook/0.1.0"],["X-Reghook-Event","push"],'
        '["X-Reghook-Delivery","' || id || '"],["X-Reghook-Signature","[redacted]"],'
        '["Authorization","[redacted]"]]')::jsonb,
       '{"callback_url":"https://reghook.example.com/callback/' || lpad(to_hex(hashint8extended(i, 3)), 16, '0')
       || '","push_data":{"pushed_at":' || extract(epoch FROM t)::bigint || ',"pusher":"ci-bot","tag":"v1.' || e
       || '"},"repository":{"comment_count":0,"date_created":1700000000,"description":"","dockerfile":"",'
       '"full_description":"","is_official":false,"is_private":true,"is_trusted":false,"name":"app-' || wh % 10
       || '","namespace":"team","owner":"team","repo_name":"team/app-' || wh % 10
       || '","repo_url":"https://registry.example.com/team/app","star_count":0,"status":"Active"}}',
       CASE WHEN ok THEN 200 WHEN f IN (2, 3) THEN NULL WHEN f = 0 THEN 503 WHEN f = 1 THEN 500 ELSE 502 END,
       CASE WHEN f NOT IN (2, 3) OR ok THEN
           '[["Content-Type","text/plain"],["Content-Length","2"],["Date","Mon, 30 Nov 2026 01:00:00 GMT"]]'::jsonb
       END,
       CASE WHEN ok THEN '\x6f6b'::bytea WHEN f NOT IN (2, 3) THEN '\x6d61696e74656e616e6365'::bytea END,
       CASE WHEN ok THEN NULL WHEN f = 2 THEN 'connect' WHEN f = 3 THEN 'timeout' ELSE 'http' END,
       CASE WHEN ok THEN NULL WHEN f = 2 THEN 'Failed to connect to hooks.example.com port 443: Connection refused'
            WHEN f = 3 THEN 'Operation timed out after 10000 milliseconds with 0 bytes received'
            ELSE 'HTTP ' || CASE f WHEN 0 THEN 503 WHEN 1 THEN 500 ELSE 502 END END,
       'reghook-1', 'dockerhub'
FROM gen_deliveries, generate_series(1, made) k,
     LATERAL (SELECT k = n AND n < 8 AS ok, (i + k) % 5 AS f) x;

