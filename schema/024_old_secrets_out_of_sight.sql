-- 024_old_secrets_out_of_sight: what releases before 006 wrote where
-- members read it, and later releases no longer write there.
--
-- Webhook names. 004's webhook_add() named a webhook after its URL's host,
-- taken after the first '@' of the URL: a password holding a raw '@'
-- (https://ci:pa@ss@hooks.example/) gave the name 'ss@hooks.example', the
-- password's tail, which every member of the namespace reads (006 moved
-- the credentials out of the URL but kept the name). A name that is a
-- fragment of the webhook's own password, '@' and the URL's host becomes
-- the host, as webhook_add() names webhooks now; a name chosen by a person
-- (--name) is kept.
UPDATE reghook.webhooks w
SET name = x.host
FROM (SELECT y.*,
             (SELECT convert_from(coalesce(string_agg(CASE WHEN p.t[1] ~ '^%[0-9A-Fa-f]{2}$'
                                                          THEN decode(substr(p.t[1], 2), 'hex')
                                                          ELSE convert_to(p.t[1], 'UTF8') END, ''
                                                     ORDER BY p.n), ''), 'UTF8')
              FROM regexp_matches(y.fragment, '%[0-9A-Fa-f]{2}|[^%]+|%', 'g')
                   WITH ORDINALITY AS p(t, n)) AS decoded
      FROM (SELECT w2.id, substring(w2.url FROM '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#@]+)') AS host,
                   substring(w2.name FROM '^(.*)@[^@]*$') AS fragment, s.password
            FROM reghook.webhooks w2 JOIN reghook.webhook_secrets s ON s.webhook_id = w2.id
            WHERE w2.name LIKE '%@%' AND s.password IS NOT NULL) y) x
WHERE w.id = x.id AND x.host IS NOT NULL AND w.name = x.fragment || '@' || x.host
  AND right(x.password, length(x.decoded) + 1) = '@' || x.decoded;

-- Request headers in the history. Before 006 a webhook's own header was
-- kept in clear unless its name held a word such as token or secret
-- (X-Auth-Key was not), and members read request_headers. Every value of a
-- header reghook does not set itself is now '[redacted]', as the
-- dispatcher writes it (dispatcher/request.c); only rows holding such a
-- value in clear are written.
CREATE TEMP TABLE kept_headers (name text PRIMARY KEY) ON COMMIT DROP;
INSERT INTO kept_headers VALUES ('content-type'), ('user-agent'), ('x-reghook-event'),
    ('x-reghook-delivery'), ('webhook-id'), ('webhook-timestamp'), ('ce-specversion'), ('ce-id'),
    ('ce-source'), ('ce-type'), ('ce-subject'), ('ce-time'), ('ce-actor');
UPDATE reghook.delivery_attempts a
SET request_headers = (
    SELECT coalesce(jsonb_agg(CASE WHEN lower(h ->> 0) IN (SELECT name FROM kept_headers) THEN h
                                   ELSE jsonb_build_array(h -> 0, '[redacted]') END
                              ORDER BY n), '[]')
    FROM jsonb_array_elements(a.request_headers) WITH ORDINALITY AS e(h, n))
WHERE jsonb_typeof(a.request_headers) = 'array'
  AND EXISTS (SELECT FROM jsonb_array_elements(a.request_headers) AS e(h)
              WHERE lower(h ->> 0) NOT IN (SELECT name FROM kept_headers)
                AND h ->> 1 IS DISTINCT FROM '[redacted]');
DROP TABLE kept_headers;
