-- 006_sql_interface: history, retrigger and authorization for SQL users.
--
-- People live with reghook through SQL: they read delivery_history and
-- webhook_health, queue deliveries again with retrigger() and
-- retrigger_failed(), and manage webhooks with the webhook_* functions;
-- who may do what is PostgreSQL's own business, group roles and row-level
-- security on every table. Those functions, views, grants and policies
-- live in schema/functions/ now (access.sql, webhooks.sql, retrigger.sql,
-- history.sql, authz.sql). What is left here: the group roles of the
-- time (shared by the cluster; 008 gives each database its own), the
-- columns and index of retrigger, and moving the credentials written into
-- the URLs of webhooks made before.

-- --- roles -------------------------------------------------------------------
-- Roles belong to the cluster, not the database: another database may have
-- created them already, maybe at this very moment.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['reghook_admin', 'reghook_dispatcher', 'reghook_member'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN NULL;
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'cannot create role %: the migrating role lacks CREATEROLE', r
                        USING HINT = 'Run reghook migrate once as a superuser, or create the roles '
                                     'reghook_admin, reghook_dispatcher and reghook_member (NOLOGIN) first.';
            END;
        END IF;
    END LOOP;
END
$$;

-- --- webhooks made before ---------------------------------------------------
-- Credentials written into a webhook's URL (https://user:pass@host/) are
-- secrets like --password: they move to its username and webhook_secrets,
-- percent-decoded, and the URL is kept without them (webhook_add() and
-- webhook_set() do the same with new URLs: url_credentials() in
-- webhooks.sql, which does not exist yet when this runs). The user
-- information ends at the last @ before the path: a password may hold a
-- raw @ (curl reads it so too).
CREATE TEMP TABLE moved_credentials ON COMMIT DROP AS
SELECT x.id, x.bare_url,
       (SELECT convert_from(coalesce(string_agg(CASE WHEN p.t[1] ~ '^%[0-9A-Fa-f]{2}$'
                                                    THEN decode(substr(p.t[1], 2), 'hex')
                                                    ELSE convert_to(p.t[1], 'UTF8') END, '' ORDER BY p.n), ''),
                            'UTF8')
        FROM regexp_matches(x.user_part, '%[0-9A-Fa-f]{2}|[^%]+|%', 'g') WITH ORDINALITY AS p(t, n)) AS username,
       (SELECT convert_from(coalesce(string_agg(CASE WHEN p.t[1] ~ '^%[0-9A-Fa-f]{2}$'
                                                    THEN decode(substr(p.t[1], 2), 'hex')
                                                    ELSE convert_to(p.t[1], 'UTF8') END, '' ORDER BY p.n), ''),
                            'UTF8')
        FROM regexp_matches(x.password_part, '%[0-9A-Fa-f]{2}|[^%]+|%', 'g') WITH ORDINALITY AS p(t, n))
           AS password,
       x.password_part IS NOT NULL AS has_password
FROM (SELECT w.id, regexp_replace(w.url, '^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@', '\1') AS bare_url,
             CASE WHEN position(':' IN m[1]) = 0 THEN m[1] ELSE split_part(m[1], ':', 1) END AS user_part,
             CASE WHEN position(':' IN m[1]) > 0 THEN substr(m[1], position(':' IN m[1]) + 1) END AS password_part
      FROM reghook.webhooks w, regexp_match(w.url, '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/?#]*)@') AS m
      WHERE m IS NOT NULL) x;
INSERT INTO reghook.webhook_secrets AS s (webhook_id, password)
SELECT m.id, m.password FROM moved_credentials m WHERE m.has_password
ON CONFLICT (webhook_id) DO UPDATE SET password = coalesce(s.password, excluded.password);
UPDATE reghook.webhooks w SET url = m.bare_url, username = coalesce(w.username, m.username)
FROM moved_credentials m WHERE w.id = m.id;
DROP TABLE moved_credentials;

-- test_webhook(webhook) of 003 becomes test_webhook(webhook_id), a change
-- of parameter name that CREATE OR REPLACE cannot make: a database made
-- before loses the old one here.
DROP FUNCTION IF EXISTS reghook.test_webhook(bigint);

-- --- retrigger ---------------------------------------------------------------
-- A retriggered delivery keeps its id (X-Reghook-Delivery) and its attempt
-- numbers continue; it gets a new round of max_attempts attempts with the
-- retry schedule from its start. round_start marks where the round began.
ALTER TABLE reghook.deliveries
    ADD COLUMN round_start integer NOT NULL DEFAULT 0,
    ADD COLUMN retriggered_at timestamptz,
    ADD COLUMN retriggered_by name;
COMMENT ON COLUMN reghook.deliveries.round_start IS
    'Attempts made before the last retrigger; max_attempts and the retry schedule count from here.';
COMMENT ON COLUMN reghook.deliveries.retriggered_at IS 'When the delivery was last queued again by retrigger().';
COMMENT ON COLUMN reghook.deliveries.retriggered_by IS 'Who queued it again.';

-- Failed deliveries of a webhook, for retrigger_failed().
CREATE INDEX deliveries_failed ON reghook.deliveries (webhook_id, completed_at) WHERE status = 'failed';
