-- authz: who may do what. The privileges of this database's group roles
-- (access.sql says who they are) on schema reghook, and its row-level
-- security; exactly the lists of README ("Who may call which function").
--
-- Applied whole, last of schema/functions/: what the group roles and
-- PUBLIC hold on the schema and its objects is taken back first, and
-- reghook's policies (those that name a group role of reghook) are
-- dropped, so that the grants and policies below are all there is,
-- whatever the database's history. What an operator granted to other
-- roles stays. PUBLIC calls no function of the schema, now or later.

-- --- a clean slate -------------------------------------------------------------
DO $$
DECLARE
    own name[] := ARRAY(SELECT g.role_name FROM reghook.group_roles g);
    r record;
BEGIN
    FOR r IN SELECT g.role_name FROM reghook.group_roles g LOOP
        EXECUTE format('REVOKE ALL ON SCHEMA reghook FROM %I', r.role_name);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA reghook FROM %I', r.role_name);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA reghook FROM %I', r.role_name);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA reghook FROM %I', r.role_name);
    END LOOP;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA reghook FROM PUBLIC;
    -- The roles of migration 006, shared by the cluster, were reghook's too.
    FOR r IN SELECT p.polname, c.oid::regclass AS tbl
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
             WHERE c.relnamespace = 'reghook'::regnamespace
               AND p.polroles && ARRAY(SELECT o.oid FROM pg_roles o
                                       WHERE o.rolname = ANY (own || ARRAY['reghook_admin', 'reghook_dispatcher',
                                                                           'reghook_member']::name[])) LOOP
        EXECUTE format('DROP POLICY %I ON %s', r.polname, r.tbl);
    END LOOP;
END
$$;

-- --- privileges ------------------------------------------------------------------
DO $$
DECLARE
    admin name := reghook.role_name('admin');
    dispatcher name := reghook.role_name('dispatcher');
    member name := reghook.role_name('member');
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA reghook TO %I, %I, %I', admin, dispatcher, member);

    -- Admins: every table, sequence and function.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA reghook TO %I', admin);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA reghook TO %I', admin);
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA reghook TO %I', admin);

    -- The dispatcher stores events, works the queue, keeps webhook health and
    -- prunes history; it reads the rest (secrets included: it sends them).
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA reghook TO %I', dispatcher);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON reghook.events, reghook.deliveries, reghook.delivery_attempts '
                   'TO %I', dispatcher);
    EXECUTE format('GRANT UPDATE ON reghook.webhooks TO %I', dispatcher);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA reghook TO %I', dispatcher);
    -- The receiver, the queue, callbacks and retention.
    EXECUTE format('GRANT EXECUTE ON FUNCTION '
                   'reghook.ingest(jsonb, text, integer, integer, jsonb, integer), '
                   'reghook.path_prefixes(text), reghook.glob_match(text, text), '
                   'reghook.event_delivery_id(bigint, bigint, text, timestamptz), '
                   'reghook.claim_deliveries(text, integer, integer, jsonb, integer), '
                   'reghook.leased_deliveries(text, uuid[]), '
                   'reghook.job_of(uuid, integer, integer, text, boolean, text, bigint, '
                   'timestamptz, reghook.events), '
                   'reghook.new_delivery_id(), reghook.new_callback_token(), '
                   'reghook.reclaim_expired(integer), reghook.release_deliveries(text, uuid[]), '
                   'reghook.complete_deliveries(text, json), '
                   'reghook.record_callback(text, text, text, text, text), '
                   'reghook.prune_history(interval, integer), '
                   'reghook.prune_history_from(interval, integer, timestamptz, bigint), reghook.role_name(text) TO %I', dispatcher);

    -- The group roles are read through role_name() only.
    EXECUTE format('REVOKE ALL ON reghook.group_roles FROM %I, %I', admin, dispatcher);

    -- Members read through row-level security; header values, secrets and
    -- callback tokens are left out column by column (and the values of a
    -- webhook's own headers are redacted in the history it writes).
    EXECUTE format('GRANT SELECT ON reghook.schema_migrations, reghook.schema_functions, reghook.namespaces, '
                   'reghook.namespace_members, reghook.events, reghook.webhooks, reghook.delivery_history, '
                   'reghook.webhook_health TO %I', member);
    -- The body sent holds the delivery's callback_url, and with it the token
    -- that lets its holder report the delivery's state: members read the rest.
    EXECUTE format('GRANT SELECT (delivery_id, attempt, webhook_id, attempted_at, duration_ms, method, url, '
                   'request_headers, response_status, response_headers, response_body, '
                   'response_truncated, error_class, error_message, instance, format) '
                   'ON reghook.delivery_attempts TO %I', member);
    EXECUTE format('GRANT SELECT (webhook_id, position, name) ON reghook.webhook_headers TO %I', member);
    EXECUTE format('GRANT SELECT (id, webhook_id, event_id, action, is_test, status, attempts, next_attempt_at, '
                   'lease_owner, lease_expires_at, created_at, completed_at, last_error, '
                   'callback_state, callback_description, callback_context, callback_target_url, '
                   'callback_at, round_start, retriggered_at, retriggered_by) '
                   'ON reghook.deliveries TO %I', member);
    -- The checked management functions, and access_level() and
    -- visible_namespaces(), which their row-level security policies call.
    -- The helpers those functions use run as the schema owner and need no
    -- grant.
    EXECUTE format('GRANT EXECUTE ON FUNCTION reghook.access_level(bigint, name), '
                   'reghook.visible_namespaces(name), '
                   'reghook.webhook_add(text, text, jsonb), reghook.webhook_set(bigint, jsonb), '
                   'reghook.webhook_set_headers(bigint, text[]), reghook.webhook_enable(bigint), '
                   'reghook.webhook_disable(bigint, text), reghook.webhook_remove(bigint), '
                   'reghook.test_webhook(bigint), reghook.namespace_grant(text, name, text), '
                   'reghook.namespace_revoke(text, name), reghook.retrigger(uuid), '
                   'reghook.retrigger_failed(bigint, timestamptz), reghook.retry_waiting(bigint), '
                   'reghook.role_name(text), reghook.webhook_secret_state(bigint) TO %I', member);
END
$$;

-- PUBLIC calls nothing made later either: ALTER DEFAULT PRIVILEGES ... IN
-- SCHEMA can only add to what a schema gives, so the revoke is made for the
-- roles that create the functions, the schema owner and the migrating role.
DO $$
DECLARE
    schema_owner name := (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'reghook');
BEGIN
    IF pg_has_role(current_user, schema_owner, 'MEMBER') THEN
        EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC',
                       schema_owner);
    END IF;
    IF current_user <> schema_owner THEN
        ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
    END IF;
END
$$;

-- --- row-level security ------------------------------------------------------------
-- Every table has it. Admins and the dispatcher see every row; a member
-- sees the rows of the namespaces it has access to (visible_namespaces(),
-- access.sql), and the webhooks, deliveries and attempts under them.
DO $$
DECLARE
    admin name := reghook.role_name('admin');
    dispatcher name := reghook.role_name('dispatcher');
    member name := reghook.role_name('member');
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['namespaces', 'namespace_members', 'registry_sources', 'events', 'webhooks',
                             'webhook_secrets', 'webhook_headers', 'deliveries', 'delivery_attempts',
                             'schema_migrations', 'schema_functions'] LOOP
        EXECUTE format('ALTER TABLE reghook.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY admin_all ON reghook.%I TO %I USING (true) WITH CHECK (true)', t, admin);
        EXECUTE format('CREATE POLICY dispatcher_all ON reghook.%I TO %I USING (true) WITH CHECK (true)',
                       t, dispatcher);
    END LOOP;
    -- No policy: only the schema owner reads it (role_name() runs as it).
    ALTER TABLE reghook.group_roles ENABLE ROW LEVEL SECURITY;

    EXECUTE format('CREATE POLICY member_read ON reghook.schema_migrations FOR SELECT TO %I USING (true)', member);
    EXECUTE format('CREATE POLICY member_read ON reghook.schema_functions FOR SELECT TO %I USING (true)', member);
    -- visible_namespaces() in a scalar subquery runs once per query (an
    -- InitPlan), whatever the number of rows the policy filters.
    EXECUTE format('CREATE POLICY member_read ON reghook.namespaces FOR SELECT TO %I '
                   'USING (id = ANY ((SELECT reghook.visible_namespaces(current_user))::bigint[]))', member);
    EXECUTE format('CREATE POLICY member_read ON reghook.namespace_members FOR SELECT TO %I '
                   'USING (namespace_id = ANY ((SELECT reghook.visible_namespaces(current_user))::bigint[]))', member);
    EXECUTE format('CREATE POLICY member_read ON reghook.events FOR SELECT TO %I '
                   'USING (namespace_id = ANY ((SELECT reghook.visible_namespaces(current_user))::bigint[]))', member);
    EXECUTE format('CREATE POLICY member_read ON reghook.webhooks FOR SELECT TO %I '
                   'USING (namespace_id = ANY ((SELECT reghook.visible_namespaces(current_user))::bigint[]))', member);
    EXECUTE format('CREATE POLICY member_read ON reghook.webhook_headers FOR SELECT TO %I '
                   'USING (webhook_id IN (SELECT w.id FROM reghook.webhooks w))', member);
    EXECUTE format('CREATE POLICY member_read ON reghook.deliveries FOR SELECT TO %I '
                   'USING (webhook_id IN (SELECT w.id FROM reghook.webhooks w))', member);
    EXECUTE format('CREATE POLICY member_read ON reghook.delivery_attempts FOR SELECT TO %I '
                   'USING (webhook_id IN (SELECT w.id FROM reghook.webhooks w))', member);
END
$$;
