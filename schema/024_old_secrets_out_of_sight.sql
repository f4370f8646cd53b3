-- 024_old_secrets_out_of_sight: what releases before 006 wrote where
-- members read it, and later releases no longer write there.
--
-- Webhook names. 004's webhook_add() named a webhook after its URL's host,
-- taken after the first '@' of the URL up to a ':', '/', '?' or '#': a
-- password holding a raw '@' (https://ci:pa@ss@hooks.example/) gave the
-- name 'ss@hooks.example', and one holding a ':' after it
-- (https://ci:pa@ss:wd@hooks.example/) the name 'ss': the password's
-- tail or a piece of it, which every member of the namespace reads (006
-- moved the credentials out of the URL but kept the name). Such a name
-- (percent-decoded, compared as bytes) becomes the URL's host, as
-- webhook_add() names webhooks now; a name chosen by a person (--name) is
-- kept, unless it is that very piece of the webhook's password.
CREATE TEMP TABLE leaked_names ON COMMIT DROP AS
SELECT y.id, y.host, y.fragment, y.at_host, y.pw,
       (SELECT coalesce(string_agg(CASE WHEN p.t[1] ~ '^%[0-9A-Fa-f]{2}$'
                                        THEN decode(substr(p.t[1], 2), 'hex')
                                        ELSE convert_to(p.t[1], 'UTF8') END, ''::bytea
                                   ORDER BY p.n), ''::bytea)
        FROM regexp_matches(y.fragment, '%[0-9A-Fa-f]{2}|[^%]+|%', 'g')
             WITH ORDINALITY AS p(t, n)) AS piece
FROM (SELECT w.id, substring(w.url FROM '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#@]+)') AS host,
             coalesce(substring(w.name FROM '^(.*)@[^@]*$'), w.name) AS fragment,
             w.name LIKE '%@%' AS at_host, convert_to(s.password, 'UTF8') AS pw
      FROM reghook.webhooks w JOIN reghook.webhook_secrets s ON s.webhook_id = w.id
      WHERE s.password LIKE '%@%') y;
UPDATE reghook.webhooks w
SET name = x.host
FROM leaked_names x
WHERE w.id = x.id AND x.host IS NOT NULL AND w.name <> x.host AND length(x.piece) > 0
  AND CASE WHEN x.at_host
           -- 'tail@host': the password ends with '@' and the tail.
           THEN w.name = x.fragment || '@' || x.host
                AND length(x.pw) > length(x.piece)
                AND substring(x.pw FROM length(x.pw) - length(x.piece))
                    = '\x40'::bytea || x.piece
           -- 'piece': '@' piece ':' within the password.
           ELSE position('\x40'::bytea || x.piece || '\x3a'::bytea IN x.pw) > 0 END;
DROP TABLE leaked_names;

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
