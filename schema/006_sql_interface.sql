-- 006_sql_interface: history, retrigger and authorization for SQL users.
--
-- People live with reghook through SQL: they read delivery_history and
-- webhook_health, queue deliveries again with retrigger() and
-- retrigger_failed(), and manage webhooks with the webhook_* functions. Who
-- may do what is PostgreSQL's own business: three group roles and
-- row-level security on every table.
--
--   reghook_admin       sees and manages everything (so does the owner of
--                       schema reghook, who runs the migrations)
--   reghook_dispatcher  what `reghook serve` needs: the queue and its tables
--   reghook_member      login roles granted a namespace with
--                       namespace_grant(); within their namespaces a viewer
--                       reads webhooks (without secrets) and history, a
--                       contributor also manages webhooks and retriggers, an
--                       owner also manages members
--
-- Members change nothing directly: every change goes through a SECURITY
-- DEFINER function with a fixed search_path that checks the caller's access
-- first. The caller is the login (session) role: inside such a function
-- the role a session SET ROLE to cannot be seen, so a login shared by
-- several people through SET ROLE acts with its own rights (README).
-- Passwords and signing secrets (webhook_secrets) and header values are
-- readable by no member. Later migrations grant their own objects.

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

-- --- who may see what ------------------------------------------------------
-- access_level(ns, who): what `who` may do in namespace ns: 0 nothing,
-- 1 viewer, 2 contributor, 3 owner, 4 admin. It reads namespace_members as
-- the schema owner (no policy recursion); `who` must be a role the session
-- may act as, so nobody learns another role's access through it.
CREATE FUNCTION reghook.access_level(ns bigint, who name) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN NOT pg_has_role(session_user, who, 'MEMBER') THEN 0
        WHEN pg_has_role(who, 'reghook_admin', 'MEMBER')
          OR pg_has_role(who, (SELECT nspowner FROM pg_namespace WHERE nspname = 'reghook'), 'MEMBER')
        THEN 4
        ELSE coalesce((
            SELECT max(CASE m.access WHEN 'owner' THEN 3 WHEN 'contributor' THEN 2 ELSE 1 END)
            FROM reghook.namespace_members m
            JOIN pg_roles r ON r.rolname = m.role_name
            WHERE m.namespace_id = ns AND pg_has_role(who, r.oid, 'MEMBER')), 0)
    END
$$;
COMMENT ON FUNCTION reghook.access_level(bigint, name) IS
    'What a role may do in a namespace: 0 nothing, 1 viewer, 2 contributor, 3 owner, 4 admin.';

CREATE FUNCTION reghook.access_name(level integer) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (ARRAY['viewer', 'contributor', 'owner', 'reghook_admin'])[level]
$$;
COMMENT ON FUNCTION reghook.access_name(integer) IS 'The name of an access level of access_level().';

-- require_namespace / require_webhook: the checks at the top of every
-- management function. Something the caller cannot see "does not exist",
-- so nothing leaks; something it sees but may not change is refused with
-- the access it would need. Both return the namespace id.
CREATE FUNCTION reghook.require_namespace(namespace text, need integer) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns_id bigint;
    level integer;
BEGIN
    SELECT n.id INTO ns_id FROM reghook.namespaces n WHERE n.name = require_namespace.namespace;
    level := CASE WHEN ns_id IS NULL THEN 0 ELSE reghook.access_level(ns_id, session_user) END;
    IF level = 0 THEN
        RAISE EXCEPTION 'namespace "%" does not exist', namespace USING ERRCODE = 'no_data_found';
    END IF;
    IF level < need THEN
        RAISE EXCEPTION 'permission denied: % access to namespace "%" is needed', reghook.access_name(need), namespace
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN ns_id;
END
$$;

CREATE FUNCTION reghook.require_webhook(webhook bigint, need integer) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns_id bigint;
    ns_name text;
    level integer;
BEGIN
    SELECT w.namespace_id, n.name INTO ns_id, ns_name
    FROM reghook.webhooks w JOIN reghook.namespaces n ON n.id = w.namespace_id WHERE w.id = webhook;
    level := CASE WHEN ns_id IS NULL THEN 0 ELSE reghook.access_level(ns_id, session_user) END;
    IF level = 0 THEN
        RAISE EXCEPTION 'webhook % does not exist', coalesce(webhook::text, 'NULL') USING ERRCODE = 'no_data_found';
    END IF;
    IF level < need THEN
        RAISE EXCEPTION 'permission denied: % access to namespace "%" is needed', reghook.access_name(need), ns_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN ns_id;
END
$$;

-- --- management functions, checked ----------------------------------------
-- The functions of 003 and 004 keep their bodies under an *_unchecked name,
-- callable by the schema owner only; the public names become checked
-- SECURITY DEFINER wrappers. webhook_add and namespace_grant name their
-- parameters by function name, which a rename would break: they are
-- replaced whole.
ALTER FUNCTION reghook.webhook_set_headers(bigint, text[]) RENAME TO webhook_set_headers_unchecked;
ALTER FUNCTION reghook.webhook_set(bigint, jsonb) RENAME TO webhook_set_unchecked;
ALTER FUNCTION reghook.webhook_enable(bigint) RENAME TO webhook_enable_unchecked;
ALTER FUNCTION reghook.webhook_disable(bigint, text) RENAME TO webhook_disable_unchecked;
ALTER FUNCTION reghook.webhook_remove(bigint) RENAME TO webhook_remove_unchecked;
ALTER FUNCTION reghook.test_webhook(bigint) RENAME TO test_webhook_unchecked;

-- Credentials written into a URL (https://user:pass@host/) are secrets
-- like --password: they move to username and webhook_secrets, and the URL
-- is kept without them. url_credentials() gives them as webhook_set()
-- changes (percent-decoded), url_without_credentials() the URL. The user
-- information ends at the last @ before the path: a password may hold a
-- raw @ (curl reads it so too).
CREATE FUNCTION reghook.percent_decode(s text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    out bytea := '';
    i integer := 1;
BEGIN
    WHILE i <= length(s) LOOP
        IF substr(s, i, 1) = '%' AND substr(s, i + 1, 2) ~ '^[0-9A-Fa-f]{2}$' THEN
            out := out || decode(substr(s, i + 1, 2), 'hex');
            i := i + 3;
        ELSE
            out := out || convert_to(substr(s, i, 1), 'UTF8');
            i := i + 1;
        END IF;
    END LOOP;
    RETURN convert_from(out, 'UTF8');
END
$$;

CREATE FUNCTION reghook.url_without_credentials(url text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT regexp_replace(url, '^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@', '\1')
$$;

CREATE FUNCTION reghook.url_credentials(url text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN m IS NULL THEN '{}'::jsonb
                WHEN position(':' IN m[1]) = 0
                THEN jsonb_build_object('username', reghook.percent_decode(m[1]))
                ELSE jsonb_build_object(
                    'username', reghook.percent_decode(split_part(m[1], ':', 1)),
                    'password', reghook.percent_decode(substr(m[1], position(':' IN m[1]) + 1)))
           END
    FROM (SELECT regexp_match(url, '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/?#]*)@') AS m) x
$$;

-- Changes as webhook_set() takes them, with credentials out of the url
-- (options given on their own, --username say, win over the URL's).
CREATE FUNCTION reghook.changes_without_url_credentials(changes jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN jsonb_typeof(changes) = 'object' AND jsonb_typeof(changes -> 'url') = 'string'
                THEN reghook.url_credentials(changes ->> 'url') || changes
                     || jsonb_build_object('url', reghook.url_without_credentials(changes ->> 'url'))
                ELSE changes END
$$;

-- Webhooks made before: their URLs' credentials move the same way.
INSERT INTO reghook.webhook_secrets AS s (webhook_id, password)
SELECT w.id, reghook.url_credentials(w.url) ->> 'password' FROM reghook.webhooks w
WHERE reghook.url_credentials(w.url) ? 'password'
ON CONFLICT (webhook_id) DO UPDATE SET password = coalesce(s.password, excluded.password);
UPDATE reghook.webhooks w SET url = reghook.url_without_credentials(w.url),
    username = coalesce(w.username, reghook.url_credentials(w.url) ->> 'username')
WHERE w.url <> reghook.url_without_credentials(w.url);

CREATE OR REPLACE FUNCTION reghook.webhook_add(namespace text, url text, changes jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns_id bigint := reghook.require_namespace(webhook_add.namespace, 2);
    new_id bigint;
BEGIN
    INSERT INTO reghook.webhooks (namespace_id, name, url)
    VALUES (ns_id, coalesce(substring(reghook.url_without_credentials(webhook_add.url) FROM '^[a-zA-Z]+://([^/:?#]+)'),
                            reghook.url_without_credentials(webhook_add.url)),
            reghook.url_without_credentials(webhook_add.url))
    RETURNING id INTO new_id;
    PERFORM reghook.webhook_set(new_id, reghook.url_credentials(webhook_add.url) || coalesce(changes, '{}'));
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION reghook.webhook_add(text, text, jsonb) IS
    'Adds a webhook (disabled) to a namespace, with optional fields as in webhook_set(); returns its id. Contributors.';

-- A new URL on another host (scheme, host or port) would get the
-- webhook's password and header values with the next request, so a
-- contributor could read them back: the change must give them again (or
-- clear them) at the same time.
CREATE FUNCTION reghook.webhook_set(webhook bigint, changes jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c jsonb;
    origin text := '^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*)';
    cur record;
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    c := reghook.changes_without_url_credentials(changes);
    IF jsonb_typeof(c -> 'url') = 'string' THEN
        SELECT w.url, s.password IS NOT NULL AS has_password,
               EXISTS (SELECT 1 FROM reghook.webhook_headers h WHERE h.webhook_id = w.id) AS has_headers
        INTO cur
        FROM reghook.webhooks w LEFT JOIN reghook.webhook_secrets s ON s.webhook_id = w.id
        WHERE w.id = webhook;
        IF lower(substring(c ->> 'url' FROM origin)) IS DISTINCT FROM lower(substring(cur.url FROM origin))
           AND ((cur.has_password AND NOT c ? 'password') OR (cur.has_headers AND NOT c ? 'headers')) THEN
            RAISE EXCEPTION 'a URL on another host would receive the webhook''s password and headers: give them again with the new URL, or clear them'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'webhook set ID --url URL --password P --header ''Name: value'' (an empty --password clears it).';
        END IF;
    END IF;
    PERFORM reghook.webhook_set_unchecked(webhook, c);
END
$$;
COMMENT ON FUNCTION reghook.webhook_set(bigint, jsonb) IS
    'Changes fields of a webhook, given as a JSON object (name url method content_type username password secret '
    'actions repository tag format timeout_ms max_attempts headers). Contributors.';

CREATE FUNCTION reghook.webhook_set_headers(webhook bigint, headers text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    PERFORM reghook.webhook_set_headers_unchecked(webhook, headers);
END
$$;
COMMENT ON FUNCTION reghook.webhook_set_headers(bigint, text[]) IS
    'Replaces a webhook''s extra headers; each element is ''Name: value''. Contributors.';

CREATE FUNCTION reghook.webhook_enable(webhook bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    PERFORM reghook.webhook_enable_unchecked(webhook);
END
$$;
COMMENT ON FUNCTION reghook.webhook_enable(bigint) IS
    'Enables a webhook: new events are delivered to it from now on. Contributors.';

CREATE FUNCTION reghook.webhook_disable(webhook bigint, reason text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    PERFORM reghook.webhook_disable_unchecked(webhook, reason);
END
$$;
COMMENT ON FUNCTION reghook.webhook_disable(bigint, text) IS
    'Disables a webhook: it gets no new deliveries; pending ones wait until it is enabled again. Contributors.';

CREATE FUNCTION reghook.webhook_remove(webhook bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    PERFORM reghook.webhook_remove_unchecked(webhook);
END
$$;
COMMENT ON FUNCTION reghook.webhook_remove(bigint) IS
    'Removes a webhook with its deliveries and their history. Contributors.';

CREATE FUNCTION reghook.test_webhook(webhook_id bigint) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook_id, 2);
    RETURN reghook.test_webhook_unchecked(webhook_id);
END
$$;
COMMENT ON FUNCTION reghook.test_webhook(bigint) IS
    'Queues a test push (repository <namespace>/reghook-test, tag test) to a webhook, enabled or not, '
    'and wakes the dispatchers; returns the delivery id. Contributors.';

-- namespace_grant also makes the role a reghook_member, which is what lets
-- it read the schema at all.
CREATE OR REPLACE FUNCTION reghook.namespace_grant(namespace text, role_name name, access text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns_id bigint := reghook.require_namespace(namespace_grant.namespace, 3);
BEGIN
    IF access IS NULL OR access NOT IN ('viewer', 'contributor', 'owner') THEN
        RAISE EXCEPTION 'access must be owner, contributor or viewer, not "%"', access
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = namespace_grant.role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', namespace_grant.role_name
            USING ERRCODE = 'undefined_object', HINT = 'Create the login role first: CREATE ROLE name LOGIN.';
    END IF;
    INSERT INTO reghook.namespace_members AS m (namespace_id, role_name, access)
    VALUES (ns_id, namespace_grant.role_name, namespace_grant.access)
    ON CONFLICT ON CONSTRAINT namespace_members_pkey
    DO UPDATE SET access = excluded.access, granted_at = now();
    IF NOT pg_has_role(namespace_grant.role_name, 'reghook_member', 'MEMBER') THEN
        EXECUTE format('GRANT reghook_member TO %I', namespace_grant.role_name);
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.namespace_grant(text, name, text) IS
    'Grants a role owner, contributor or viewer access to a namespace (replacing its earlier access). Owners.';

CREATE FUNCTION reghook.namespace_revoke(namespace text, role_name name) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns_id bigint := reghook.require_namespace(namespace, 3);
BEGIN
    DELETE FROM reghook.namespace_members m
    WHERE m.namespace_id = ns_id AND m.role_name = namespace_revoke.role_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" has no access to namespace "%"', role_name, namespace
            USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.namespace_revoke(text, name) IS 'Takes a role''s access to a namespace away. Owners.';

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

-- The dispatcher learns round_start from the claim (007).
CREATE OR REPLACE FUNCTION reghook.reclaim_expired(default_max_attempts integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE n integer;
BEGIN
    WITH expired AS (
        SELECT d.id, d.attempts, d.webhook_id, d.lease_owner,
               d.attempts - d.round_start >= coalesce(w.max_attempts, default_max_attempts) AS exhausted
        FROM reghook.deliveries d JOIN reghook.webhooks w ON w.id = d.webhook_id
        WHERE d.status = 'in_flight' AND d.lease_expires_at < now()
        FOR UPDATE OF d SKIP LOCKED
    ),
    lost AS (
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, error_class, error_message, instance)
        SELECT x.id, x.attempts, x.webhook_id, now(), 0, '', '', '[]', 'other',
               'no result: the dispatcher holding the delivery stopped before its lease ran out',
               coalesce(x.lease_owner, '')
        FROM expired x
        ON CONFLICT DO NOTHING
    )
    UPDATE reghook.deliveries d
    SET status = CASE WHEN x.exhausted THEN 'failed' ELSE 'pending' END,
        completed_at = CASE WHEN x.exhausted THEN now() END,
        next_attempt_at = now(), lease_owner = NULL, lease_expires_at = NULL,
        last_error = 'dispatcher lost (lease expired)'
    FROM expired x WHERE d.id = x.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- retrigger(delivery): queues one finished delivery again, at once; the
-- NOTIFY of the deliveries trigger wakes the dispatchers.
CREATE FUNCTION reghook.retrigger(delivery_id uuid) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d record;
BEGIN
    SELECT x.id, x.status, x.webhook_id, x.next_attempt_at, w.enabled, w.disabled_reason INTO d
    FROM reghook.deliveries x JOIN reghook.webhooks w ON w.id = x.webhook_id
    WHERE x.id = retrigger.delivery_id
    FOR UPDATE OF x;
    IF d.id IS NULL OR reghook.access_level(
            (SELECT namespace_id FROM reghook.webhooks WHERE id = d.webhook_id), session_user) = 0 THEN
        RAISE EXCEPTION 'delivery % does not exist', coalesce(delivery_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM reghook.require_webhook(d.webhook_id, 2);
    IF d.status = 'pending' THEN
        RAISE EXCEPTION 'delivery % is still pending: its next attempt is due at %', delivery_id, d.next_attempt_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF d.status = 'in_flight' THEN
        RAISE EXCEPTION 'delivery % is in flight: an attempt is running now', delivery_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT d.enabled THEN
        RAISE EXCEPTION 'webhook % is disabled (%): enable it first', d.webhook_id,
            coalesce(d.disabled_reason, 'no reason given')
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE reghook.deliveries x
    SET status = 'pending', next_attempt_at = now(), completed_at = NULL, round_start = x.attempts,
        retriggered_at = now(), retriggered_by = session_user
    WHERE x.id = d.id;
    RETURN d.id;
END
$$;
COMMENT ON FUNCTION reghook.retrigger(uuid) IS
    'Queues a succeeded or failed delivery again at once, keeping its id; attempts continue numbering. Contributors.';

-- retrigger_failed(webhook, since): every failed delivery of a webhook,
-- or those that failed since a time. Returns how many were queued.
CREATE FUNCTION reghook.retrigger_failed(webhook_id bigint, since timestamptz DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w record;
    n integer;
BEGIN
    PERFORM reghook.require_webhook(webhook_id, 2);
    SELECT x.enabled, x.disabled_reason INTO w FROM reghook.webhooks x WHERE x.id = retrigger_failed.webhook_id;
    IF NOT w.enabled THEN
        RAISE EXCEPTION 'webhook % is disabled (%): enable it first', webhook_id,
            coalesce(w.disabled_reason, 'no reason given')
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE reghook.deliveries x
    SET status = 'pending', next_attempt_at = now(), completed_at = NULL, round_start = x.attempts,
        retriggered_at = now(), retriggered_by = session_user
    WHERE x.webhook_id = retrigger_failed.webhook_id AND x.status = 'failed'
      AND (since IS NULL OR x.completed_at >= since);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION reghook.retrigger_failed(bigint, timestamptz) IS
    'Queues again every failed delivery of a webhook (those completed at or after since, if given); returns how many. '
    'Contributors.';

-- --- views -------------------------------------------------------------------
-- Both run with the reader's rights (security_invoker), so row-level
-- security decides what each reader sees.
--
-- delivery_history is deliveries LEFT JOIN attempts. The join also equates
-- the two webhook_id columns, so that a filter on webhook_id reaches the
-- (webhook_id, attempted_at) index of the attempts: a webhook's last
-- attempts, asked with `attempt IS NOT NULL ... ORDER BY attempted_at DESC
-- LIMIT n`, come from that index, and a time window from (attempted_at).
CREATE VIEW reghook.delivery_history WITH (security_invoker = true) AS
SELECT d.id AS delivery_id, a.attempt, d.webhook_id, w.name AS webhook_name, n.name AS namespace,
       coalesce(e.repository, n.name || '/reghook-test') AS repository,
       coalesce(e.tag, CASE WHEN d.is_test THEN 'test' END) AS tag, e.digest, d.action,
       coalesce(a.url, w.url) AS url, d.status, a.response_status, a.duration_ms,
       a.error_message AS error, a.attempted_at,
       CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
       a.error_class, d.is_test, d.event_id, d.created_at
FROM reghook.deliveries d
JOIN reghook.webhooks w ON w.id = d.webhook_id
JOIN reghook.namespaces n ON n.id = w.namespace_id
LEFT JOIN reghook.events e ON e.id = d.event_id
LEFT JOIN reghook.delivery_attempts a ON a.delivery_id = d.id AND a.webhook_id = d.webhook_id;
COMMENT ON VIEW reghook.delivery_history IS
    'One row per delivery attempt; a delivery not tried yet appears once with its attempt columns NULL.';
COMMENT ON COLUMN reghook.delivery_history.delivery_id IS 'The delivery (X-Reghook-Delivery).';
COMMENT ON COLUMN reghook.delivery_history.attempt IS 'Attempt number, from 1; NULL for a delivery not tried yet.';
COMMENT ON COLUMN reghook.delivery_history.webhook_id IS 'The webhook.';
COMMENT ON COLUMN reghook.delivery_history.webhook_name IS 'The webhook''s name.';
COMMENT ON COLUMN reghook.delivery_history.namespace IS 'The webhook''s namespace.';
COMMENT ON COLUMN reghook.delivery_history.repository IS 'Repository of the event.';
COMMENT ON COLUMN reghook.delivery_history.tag IS 'Tag of the event, if any.';
COMMENT ON COLUMN reghook.delivery_history.digest IS 'Manifest digest of the event, if any.';
COMMENT ON COLUMN reghook.delivery_history.action IS 'push or delete.';
COMMENT ON COLUMN reghook.delivery_history.url IS 'URL requested (the webhook''s URL template if not tried yet).';
COMMENT ON COLUMN reghook.delivery_history.status IS 'Of the delivery, now: pending, in_flight, succeeded, failed.';
COMMENT ON COLUMN reghook.delivery_history.response_status IS 'HTTP status answered; NULL on a transport failure.';
COMMENT ON COLUMN reghook.delivery_history.duration_ms IS 'How long the attempt took.';
COMMENT ON COLUMN reghook.delivery_history.error IS 'What went wrong, for a person; NULL on success.';
COMMENT ON COLUMN reghook.delivery_history.attempted_at IS 'When the attempt started.';
COMMENT ON COLUMN reghook.delivery_history.next_attempt_at IS 'For a pending delivery, when its next attempt is due.';
COMMENT ON COLUMN reghook.delivery_history.error_class IS 'dns, connect, tls, timeout, blocked, http or other.';
COMMENT ON COLUMN reghook.delivery_history.is_test IS 'A test push made by test_webhook().';
COMMENT ON COLUMN reghook.delivery_history.event_id IS 'The event delivered (NULL for a test push).';
COMMENT ON COLUMN reghook.delivery_history.created_at IS 'When the delivery was created.';

CREATE VIEW reghook.webhook_health WITH (security_invoker = true) AS
SELECT w.id AS webhook_id, w.name AS webhook_name, n.name AS namespace, w.enabled, w.disabled_reason,
       w.last_success_at, w.last_failure_at, w.failures_in_a_row,
       (SELECT count(*) FROM reghook.deliveries d
        WHERE d.webhook_id = w.id AND d.status IN ('pending', 'in_flight')) AS pending,
       (SELECT round(avg(CASE WHEN a.error_class IS NULL THEN 1 ELSE 0 END), 3)
        FROM reghook.delivery_attempts a
        WHERE a.webhook_id = w.id AND a.attempted_at > now() - interval '24 hours') AS success_rate_24h,
       w.url, w.failing_since
FROM reghook.webhooks w
JOIN reghook.namespaces n ON n.id = w.namespace_id;
COMMENT ON VIEW reghook.webhook_health IS 'One row per webhook: is it enabled, is it healthy, how much waits.';
COMMENT ON COLUMN reghook.webhook_health.webhook_id IS 'The webhook.';
COMMENT ON COLUMN reghook.webhook_health.webhook_name IS 'The webhook''s name.';
COMMENT ON COLUMN reghook.webhook_health.namespace IS 'The webhook''s namespace.';
COMMENT ON COLUMN reghook.webhook_health.enabled IS 'Whether it gets deliveries.';
COMMENT ON COLUMN reghook.webhook_health.disabled_reason IS 'Why it was disabled (410 Gone, days of failures, a person).';
COMMENT ON COLUMN reghook.webhook_health.last_success_at IS 'Time of the last 2xx answer.';
COMMENT ON COLUMN reghook.webhook_health.last_failure_at IS 'Time of the last failed attempt.';
COMMENT ON COLUMN reghook.webhook_health.failures_in_a_row IS 'Failed attempts since the last success.';
COMMENT ON COLUMN reghook.webhook_health.pending IS 'Deliveries waiting or in flight.';
COMMENT ON COLUMN reghook.webhook_health.success_rate_24h IS
    'Share of the last 24 hours'' attempts that succeeded, 0 to 1; NULL without attempts.';
COMMENT ON COLUMN reghook.webhook_health.url IS 'The webhook''s URL template.';
COMMENT ON COLUMN reghook.webhook_health.failing_since IS 'First failure since the last success, if failing.';

-- Failed deliveries of a webhook, for retrigger_failed().
CREATE INDEX deliveries_failed ON reghook.deliveries (webhook_id, completed_at) WHERE status = 'failed';

-- --- privileges and row-level security --------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA reghook FROM PUBLIC;
GRANT USAGE ON SCHEMA reghook TO reghook_admin, reghook_dispatcher, reghook_member;
GRANT SELECT ON reghook.schema_migrations TO reghook_admin, reghook_dispatcher, reghook_member;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA reghook TO reghook_admin;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA reghook TO reghook_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA reghook TO reghook_admin;
REVOKE EXECUTE ON FUNCTION
    reghook.webhook_set_headers_unchecked(bigint, text[]), reghook.webhook_set_unchecked(bigint, jsonb),
    reghook.webhook_enable_unchecked(bigint),
    reghook.webhook_disable_unchecked(bigint, text), reghook.webhook_remove_unchecked(bigint),
    reghook.test_webhook_unchecked(bigint)
    FROM reghook_admin;

-- The dispatcher stores events, works the queue, keeps webhook health and
-- prunes history; it reads the rest (secrets included: it sends them).
GRANT SELECT ON ALL TABLES IN SCHEMA reghook TO reghook_dispatcher;
GRANT INSERT, UPDATE, DELETE ON reghook.events, reghook.deliveries, reghook.delivery_attempts
    TO reghook_dispatcher;
GRANT UPDATE ON reghook.webhooks TO reghook_dispatcher;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA reghook TO reghook_dispatcher;
GRANT EXECUTE ON FUNCTION
    reghook.ingest(jsonb), reghook.path_prefixes(text), reghook.glob_match(text, text),
    reghook.claim_deliveries(text, integer, integer, jsonb, integer), reghook.reclaim_expired(integer),
    reghook.release_deliveries(text, uuid[]), reghook.complete_deliveries(text, jsonb),
    reghook.record_callback(text, text, text, text, text), reghook.prune_history(interval, integer)
    TO reghook_dispatcher;

-- Members read through row-level security; header values, secrets and
-- callback tokens are left out column by column (and the values of a
-- webhook's own headers are redacted in the history it writes).
GRANT SELECT ON reghook.namespaces, reghook.namespace_members, reghook.events, reghook.webhooks,
    reghook.delivery_history, reghook.webhook_health TO reghook_member;
-- The body sent holds the delivery's callback_url, and with it the token
-- that lets its holder report the delivery's state: members read the rest.
GRANT SELECT (delivery_id, attempt, webhook_id, attempted_at, duration_ms, method, url,
              request_headers, response_status, response_headers, response_body,
              response_truncated, error_class, error_message, instance)
    ON reghook.delivery_attempts TO reghook_member;
GRANT SELECT (webhook_id, position, name) ON reghook.webhook_headers TO reghook_member;
GRANT SELECT (id, webhook_id, event_id, action, is_test, status, attempts, next_attempt_at,
              lease_owner, lease_expires_at, created_at, completed_at, last_error,
              callback_state, callback_description, callback_context, callback_target_url,
              callback_at, round_start, retriggered_at, retriggered_by)
    ON reghook.deliveries TO reghook_member;
GRANT EXECUTE ON FUNCTION
    reghook.access_level(bigint, name), reghook.access_name(integer), reghook.glob_match(text, text),
    reghook.percent_decode(text), reghook.url_without_credentials(text), reghook.url_credentials(text),
    reghook.changes_without_url_credentials(jsonb),
    reghook.webhook_add(text, text, jsonb), reghook.webhook_set(bigint, jsonb),
    reghook.webhook_set_headers(bigint, text[]), reghook.webhook_enable(bigint),
    reghook.webhook_disable(bigint, text), reghook.webhook_remove(bigint), reghook.test_webhook(bigint),
    reghook.namespace_grant(text, name, text), reghook.namespace_revoke(text, name),
    reghook.retrigger(uuid), reghook.retrigger_failed(bigint, timestamptz)
    TO reghook_member;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['namespaces', 'namespace_members', 'registry_sources', 'events', 'webhooks',
                             'webhook_secrets', 'webhook_headers', 'deliveries', 'delivery_attempts',
                             'schema_migrations'] LOOP
        EXECUTE format('ALTER TABLE reghook.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY admin_all ON reghook.%I TO reghook_admin USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY dispatcher_all ON reghook.%I TO reghook_dispatcher '
                       'USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;
CREATE POLICY member_read ON reghook.schema_migrations FOR SELECT TO reghook_member USING (true);
CREATE POLICY member_read ON reghook.namespaces FOR SELECT TO reghook_member
    USING (reghook.access_level(id, current_user) > 0);
CREATE POLICY member_read ON reghook.namespace_members FOR SELECT TO reghook_member
    USING (reghook.access_level(namespace_id, current_user) > 0);
CREATE POLICY member_read ON reghook.events FOR SELECT TO reghook_member
    USING (reghook.access_level(namespace_id, current_user) > 0);
CREATE POLICY member_read ON reghook.webhooks FOR SELECT TO reghook_member
    USING (reghook.access_level(namespace_id, current_user) > 0);
CREATE POLICY member_read ON reghook.webhook_headers FOR SELECT TO reghook_member
    USING (webhook_id IN (SELECT w.id FROM reghook.webhooks w));
CREATE POLICY member_read ON reghook.deliveries FOR SELECT TO reghook_member
    USING (webhook_id IN (SELECT w.id FROM reghook.webhooks w));
CREATE POLICY member_read ON reghook.delivery_attempts FOR SELECT TO reghook_member
    USING (webhook_id IN (SELECT w.id FROM reghook.webhooks w));
