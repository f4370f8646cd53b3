-- access: who is who in a reghook database, and what each may do.
--
-- People live with reghook through SQL, and who may do what is
-- PostgreSQL's own business: each database has three group roles of its
-- own (migration 008 makes them and records them in group_roles, named
-- after the database, since roles belong to the whole cluster), and
-- row-level security on every table (authz.sql):
--
--   admin       sees and manages everything (so does the owner of schema
--               reghook, who runs the migrations)
--   dispatcher  what `reghook serve` needs: the queue and its tables
--   member      login roles granted a namespace with namespace_grant();
--               within their namespaces a viewer reads webhooks (without
--               secrets) and history, a contributor also manages webhooks
--               and retriggers, an owner also manages members
--
-- Members change nothing directly: every change goes through a SECURITY
-- DEFINER function with a fixed search_path that checks the caller's
-- access first, with require_namespace() or require_webhook() below. The
-- caller is the login (session) role: inside such a function the role a
-- session SET ROLE to cannot be seen, so a login shared by several people
-- through SET ROLE acts with its own rights (README).

-- derived_role_name: the naming rule of the group roles (migration 008
-- applies the same rule when it makes them); role_name(): the roles this
-- database has, which a renamed database keeps.
CREATE OR REPLACE FUNCTION reghook.derived_role_name(db name, kind text) RETURNS name
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN db = 'reghook' THEN 'reghook_' || kind
                -- 'reghook_dispatcher_' is 19 bytes of the 63 a name may have.
                WHEN octet_length(db) <= 44 THEN 'reghook_' || kind || '_' || db
                ELSE 'reghook_' || kind || '_' || md5(db) END::name
$$;
COMMENT ON FUNCTION reghook.derived_role_name(name, text) IS
    'The name of a group role (admin, dispatcher, member) of a reghook database named db, as migration 008 makes it.';

CREATE OR REPLACE FUNCTION reghook.role_name(kind text) RETURNS name
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r name;
BEGIN
    SELECT g.role_name INTO r FROM reghook.group_roles g WHERE g.kind = role_name.kind;
    IF r IS NULL THEN
        RAISE EXCEPTION 'kind must be admin, dispatcher or member, not "%"', kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION reghook.role_name(text) IS
    'The group role of this database for admin, dispatcher or member: reghook_admin in a database named reghook, '
    'reghook_admin_<database> elsewhere (see README).';

-- is_admin(who): whether `who` administers reghook in this database: a
-- member of its admin role, or of the schema owner. access_level() and
-- visible_namespaces() ask it; they run as the schema owner.
CREATE OR REPLACE FUNCTION reghook.is_admin(who name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_has_role(who, (SELECT g.role_name FROM reghook.group_roles g WHERE g.kind = 'admin'), 'MEMBER')
        OR pg_has_role(who, (SELECT nspowner FROM pg_namespace WHERE nspname = 'reghook'), 'MEMBER')
$$;
COMMENT ON FUNCTION reghook.is_admin(name) IS
    'Whether a role administers reghook here: a member of the admin role or of the schema owner.';

-- access_level(ns, who): what `who` may do in namespace ns: 0 nothing,
-- 1 viewer, 2 contributor, 3 owner, 4 admin (a member of this database's
-- admin role, or of the schema owner). It reads namespace_members as the
-- schema owner (no policy recursion); `who` must be a role the session may
-- act as, so nobody learns another role's access through it.
CREATE OR REPLACE FUNCTION reghook.access_level(ns bigint, who name) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN NOT pg_has_role(session_user, who, 'MEMBER') THEN 0
        WHEN reghook.is_admin(who) THEN 4
        ELSE coalesce((
            SELECT max(CASE m.access WHEN 'owner' THEN 3 WHEN 'contributor' THEN 2 ELSE 1 END)
            FROM reghook.namespace_members m
            JOIN pg_roles r ON r.rolname = m.role_name
            WHERE m.namespace_id = ns AND pg_has_role(who, r.oid, 'MEMBER')), 0)
    END
$$;
COMMENT ON FUNCTION reghook.access_level(bigint, name) IS
    'What a role may do in a namespace: 0 nothing, 1 viewer, 2 contributor, 3 owner, 4 admin.';

-- visible_namespaces(who): the namespaces in which access_level(ns, who)
-- is above 0, as one array: the row-level security policies of members
-- (authz.sql) read it once per query, as an InitPlan, instead of calling
-- access_level() for every row of webhooks (and of deliveries and attempts
-- through them): 1,000 webhooks cost a member 50-200 ms of every query so.
CREATE OR REPLACE FUNCTION reghook.visible_namespaces(who name) RETURNS bigint[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- PL/pgSQL, not SQL: its plans are kept for the session, where a SQL
    -- function that is not inlined (SECURITY DEFINER) is planned at each call.
    IF NOT pg_has_role(session_user, who, 'MEMBER') THEN
        RETURN '{}';
    END IF;
    IF reghook.is_admin(who) THEN
        RETURN ARRAY(SELECT n.id FROM reghook.namespaces n ORDER BY n.id);
    END IF;
    RETURN ARRAY(SELECT DISTINCT m.namespace_id
                 FROM reghook.namespace_members m
                 JOIN pg_roles r ON r.rolname = m.role_name
                 WHERE pg_has_role(who, r.oid, 'MEMBER')
                 ORDER BY m.namespace_id);
END
$$;
COMMENT ON FUNCTION reghook.visible_namespaces(name) IS
    'The namespaces a role sees (access_level() above 0), for the row-level security policies of members.';

CREATE OR REPLACE FUNCTION reghook.access_name(level integer) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT (ARRAY['viewer', 'contributor', 'owner',
                  (SELECT g.role_name FROM reghook.group_roles g WHERE g.kind = 'admin')])[level]
$$;
COMMENT ON FUNCTION reghook.access_name(integer) IS 'The name of an access level of access_level().';

-- require_namespace / require_webhook: the checks at the top of every
-- management function. Something the caller cannot see "does not exist",
-- so nothing leaks; something it sees but may not change is refused with
-- the access it would need. Both return the namespace id.
CREATE OR REPLACE FUNCTION reghook.require_namespace(namespace text, need integer) RETURNS bigint
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

CREATE OR REPLACE FUNCTION reghook.require_webhook(webhook bigint, need integer) RETURNS bigint
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

-- --- the group roles: there, bound to this database, and alone to connect -------
-- Migration 008 made the group roles and bound them to this database; what
-- happened to the database since may have undone some of that, and
-- `reghook migrate`, run by the schema's owner, applies these files again
-- when group_roles_need_care() says so (dispatcher/migrate.c):
--   - restored from another cluster: the roles' descriptions name an oid
--     that no database here has. This database takes them, so that a new
--     database given its old name (after a rename, say) is refused them,
--     as migration 008 refuses roles bound to a database that exists: it
--     would otherwise take them, its dispatcher then the old database's.
--   - renamed: the description names it again.
--   - restored without the cluster's roles (pg_dumpall --globals-only):
--     they are made again, and the roles granted namespaces made members of
--     the member role again; authz.sql, applied after this file, grants and
--     makes the policies (pg_restore could not: their roles were missing).
--   - restored without -C, or by another owner: CONNECT is PUBLIC's again;
--     it is taken back.
-- Roles bound to another database of the cluster that exists (a copy
-- restored there: README, Limits) are left as they are.
CREATE OR REPLACE FUNCTION reghook.role_description(kind text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('reghook: the %s role of database %s (database oid %s)', kind,
                  quote_ident(current_database()),
                  (SELECT oid FROM pg_database WHERE datname = current_database()))
$$;
COMMENT ON FUNCTION reghook.role_description(text) IS
    'The description that binds a group role of this kind to this database.';

CREATE OR REPLACE FUNCTION reghook.group_roles_need_care() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'reghook'), 'MEMBER')
       AND (EXISTS (SELECT 1 FROM reghook.group_roles g LEFT JOIN pg_roles o ON o.rolname = g.role_name
                    WHERE o.oid IS NULL
                       OR NOT has_schema_privilege(o.oid, 'reghook', 'USAGE')
                       -- A binding only a role with CREATEROLE may write (else the
                       -- files would be applied again at every start, in vain).
                       OR coalesce(shobj_description(o.oid, 'pg_authid'), '') <> reghook.role_description(g.kind)
                          AND (SELECT r.rolcreaterole OR r.rolsuper FROM pg_roles r WHERE r.rolname = current_user)
                          AND NOT EXISTS (SELECT 1 FROM pg_database d
                                          WHERE d.datname <> current_database()
                                            AND d.oid::text = substring(shobj_description(o.oid, 'pg_authid')
                                                                        FROM '\(database oid ([0-9]+)\)$')))
            OR pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = current_database()),
                           'MEMBER')
               AND has_database_privilege('public', current_database(), 'CONNECT'))
$$;
COMMENT ON FUNCTION reghook.group_roles_need_care() IS
    'Whether the group roles of this database are missing, lack their grants or their binding to it, or CONNECT is '
    'PUBLIC''s (and the caller, the schema''s owner, can mend it): reghook migrate then applies the function files again.';

DO $$
DECLARE
    db_oid oid := (SELECT oid FROM pg_database WHERE datname = current_database());
    r record;
    described text;
    bound_to oid;
    remade_member boolean := false;
    names name[];
BEGIN
    FOR r IN SELECT g.kind, g.role_name, o.oid AS role_oid
             FROM reghook.group_roles g LEFT JOIN pg_roles o ON o.rolname = g.role_name
             ORDER BY g.kind LOOP
        bound_to := NULL;
        IF r.role_oid IS NULL THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r.role_name);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % (the % role of this database) does not exist, and the migrating role may not '
                                'create it', quote_ident(r.role_name), r.kind
                    USING HINT = 'A restore without the cluster''s roles (pg_dumpall --globals-only) lacks it: run '
                                 'reghook migrate once as a role with CREATEROLE, or create it (NOLOGIN).';
            END;
            RAISE WARNING 'role % (the % role of this database) did not exist, as after a restore without the '
                          'cluster''s roles: made again', quote_ident(r.role_name), r.kind
                USING HINT = CASE WHEN r.kind = 'member' THEN 'The roles granted namespaces are its members again.'
                                  ELSE format('Make the roles that had it its members again: GRANT %I TO ...',
                                              r.role_name) END;
            remade_member := remade_member OR r.kind = 'member';
        ELSE
            described := shobj_description(r.role_oid, 'pg_authid');
            CONTINUE WHEN described IS NOT DISTINCT FROM reghook.role_description(r.kind);
            bound_to := substring(described FROM '^reghook: .* \(database oid ([0-9]+)\)$')::oid;
            -- Another database's that exists: shared (README, Limits), left.
            CONTINUE WHEN bound_to <> db_oid AND EXISTS (SELECT 1 FROM pg_database WHERE oid = bound_to);
            IF bound_to IS DISTINCT FROM db_oid THEN
                RAISE WARNING 'role % was not bound to a database of this cluster (%), as after a restore from '
                              'another cluster: it is this database''s now', quote_ident(r.role_name),
                              coalesce(described, 'no description')
                    USING HINT = 'A new database given this one''s former name is refused it.';
            END IF;
        END IF;
        BEGIN
            EXECUTE format('COMMENT ON ROLE %I IS %L', r.role_name, reghook.role_description(r.kind));
        EXCEPTION WHEN insufficient_privilege THEN
            -- Bound by its oid, only the name is stale (a rename): harmless.
            CONTINUE WHEN bound_to = db_oid;
            RAISE WARNING 'role % is not bound to this database, and the migrating role may not bind it',
                quote_ident(r.role_name)
                USING HINT = 'Run reghook migrate once as a role with CREATEROLE: a new database given this one''s '
                             'name could otherwise take the role.';
        END;
    END LOOP;

    IF remade_member THEN
        FOR r IN SELECT DISTINCT m.role_name FROM reghook.namespace_members m
                 JOIN pg_roles o ON o.rolname = m.role_name ORDER BY 1 LOOP
            EXECUTE format('GRANT %I TO %I', reghook.role_name('member'), r.role_name);
        END LOOP;
    END IF;

    names := ARRAY(SELECT g.role_name FROM reghook.group_roles g ORDER BY g.kind);
    IF pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE oid = db_oid), 'MEMBER') THEN
        IF has_database_privilege('public', db_oid, 'CONNECT')
           OR EXISTS (SELECT 1 FROM unnest(names) n WHERE NOT has_database_privilege(n, db_oid, 'CONNECT')) THEN
            EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database());
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I', current_database(),
                           names[1], names[2], names[3]);
        END IF;
    ELSIF has_database_privilege('public', db_oid, 'CONNECT') THEN
        RAISE WARNING 'CONNECT to database % is PUBLIC''s: only its owner may revoke it', quote_ident(current_database())
            USING HINT = format('As the owner: REVOKE CONNECT ON DATABASE %1$s FROM PUBLIC; '
                                'GRANT CONNECT ON DATABASE %1$s TO %2$s, %3$s, %4$s;', quote_ident(current_database()),
                                quote_ident(names[1]), quote_ident(names[2]), quote_ident(names[3]));
    END IF;
END
$$;
