-- 008_database_roles: group roles of this database only, and no function
-- that PUBLIC may call.
--
-- Roles belong to the whole PostgreSQL cluster, so the three group roles
-- of 006 were shared by every reghook database on it: a role made a
-- dispatcher of one database read the webhook secrets of all. From here on
-- each database has group roles of its own, named after it:
--
--   database reghook      reghook_admin, reghook_dispatcher, reghook_member
--                         (the names of 006, kept for the common case)
--   database D            reghook_admin_D, reghook_dispatcher_D,
--                         reghook_member_D
--   D over 44 bytes       reghook_admin_<md5 of D>, ... (within the 63 bytes
--                         of a PostgreSQL name)
--
-- Each group role is bound to its database by a comment on the role
-- (pg_shdescription, cluster-wide), which names the database and its oid;
-- a migration refuses roles bound to another database that still exists,
-- so that two databases never share a group role (a database renamed, say,
-- while a new one takes its old name). The names are kept in group_roles:
-- a database renamed later keeps its roles. reghook.role_name() tells SQL
-- users and the command line which they are.
--
-- A database that already holds namespaces or registry sources (one
-- migrated by an earlier reghook, not named reghook) moves its grants, its
-- policies and the members of the old group roles to its new roles, so
-- that nobody loses access; the old roles keep nothing in it. A new
-- database takes no members from the old roles: those belong to other
-- databases.
--
-- CONNECT to the database is no longer PUBLIC's: its own group roles (and
-- its owner) have it. Functions of schema reghook are executable by exactly
-- the roles the README lists, never by PUBLIC; reghook migrate revokes
-- PUBLIC's EXECUTE after every migration, and the default privileges of
-- the schema owner give PUBLIC none on functions made later.

-- --- names -------------------------------------------------------------------
CREATE FUNCTION reghook.derived_role_name(db name, kind text) RETURNS name
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN db = 'reghook' THEN 'reghook_' || kind
                -- 'reghook_dispatcher_' is 19 bytes of the 63 a name may have.
                WHEN octet_length(db) <= 44 THEN 'reghook_' || kind || '_' || db
                ELSE 'reghook_' || kind || '_' || md5(db) END::name
$$;
COMMENT ON FUNCTION reghook.derived_role_name(name, text) IS
    'The name of a group role (admin, dispatcher, member) of a reghook database named db, as migration 008 makes it.';

CREATE TABLE reghook.group_roles (
    kind      text PRIMARY KEY CHECK (kind IN ('admin', 'dispatcher', 'member')),
    role_name name NOT NULL UNIQUE
);
COMMENT ON TABLE reghook.group_roles IS
    'The group roles of this database (cluster-wide roles bound to it), read through role_name().';
COMMENT ON COLUMN reghook.group_roles.kind IS 'admin, dispatcher or member.';
COMMENT ON COLUMN reghook.group_roles.role_name IS 'The PostgreSQL role.';
ALTER TABLE reghook.group_roles ENABLE ROW LEVEL SECURITY;

CREATE FUNCTION reghook.role_name(kind text) RETURNS name
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

-- --- the roles, bound to this database ---------------------------------------
DO $$
DECLARE
    db name := current_database();
    db_oid oid := (SELECT oid FROM pg_database WHERE datname = current_database());
    in_use boolean := EXISTS (SELECT 1 FROM reghook.namespaces) OR EXISTS (SELECT 1 FROM reghook.registry_sources);
    kind text;
    new_role name;
    old_role name;
    old_oid oid;
    bound_to oid;
    r record;
BEGIN
    FOREACH kind IN ARRAY ARRAY['admin', 'dispatcher', 'member'] LOOP
        new_role := reghook.derived_role_name(db, kind);
        old_role := 'reghook_' || kind;
        bound_to := substring(shobj_description((SELECT oid FROM pg_roles WHERE rolname = new_role), 'pg_authid')
                              FROM '^reghook: .* \(database oid ([0-9]+)\)$')::oid;
        IF bound_to <> db_oid AND EXISTS (SELECT 1 FROM pg_database WHERE oid = bound_to) THEN
            RAISE EXCEPTION 'role % is the % role of another reghook database, %', new_role, kind,
                (SELECT quote_ident(datname) FROM pg_database WHERE oid = bound_to)
                USING ERRCODE = 'duplicate_object',
                      HINT = 'Each reghook database needs group roles of its own, named after it. Rename this '
                             'database, or drop that one''s roles if it no longer uses them.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = new_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', new_role);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'cannot create role %: the migrating role lacks CREATEROLE', new_role
                    USING HINT = format('Run reghook migrate once as a superuser, or create the roles %s, %s '
                                        'and %s (NOLOGIN) first.',
                                        quote_ident(reghook.derived_role_name(db, 'admin')),
                                        quote_ident(reghook.derived_role_name(db, 'dispatcher')),
                                        quote_ident(reghook.derived_role_name(db, 'member')));
            END;
        END IF;
        EXECUTE format('COMMENT ON ROLE %I IS %L', new_role,
                       format('reghook: the %s role of database %s (database oid %s)', kind, quote_ident(db), db_oid));
        INSERT INTO reghook.group_roles VALUES (kind, new_role);

        old_oid := (SELECT oid FROM pg_roles WHERE rolname = old_role);
        CONTINUE WHEN new_role = old_role OR old_oid IS NULL;

        -- What 006 granted to the old role in this database moves to the new one.
        FOR r IN SELECT c.oid::regclass AS obj, c.relkind, a.privilege_type, a.is_grantable
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
                 WHERE n.nspname = 'reghook' AND a.grantee = old_oid LOOP
            EXECUTE format('GRANT %s ON %s %s TO %I%s', r.privilege_type,
                           CASE WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, r.obj, new_role,
                           CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        FOR r IN SELECT c.oid::regclass AS obj, t.attname, a.privilege_type, a.is_grantable
                 FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(t.attacl) a
                 WHERE n.nspname = 'reghook' AND a.grantee = old_oid LOOP
            EXECUTE format('GRANT %s (%I) ON TABLE %s TO %I%s', r.privilege_type, r.attname, r.obj, new_role,
                           CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        FOR r IN SELECT a.privilege_type, a.is_grantable
                 FROM pg_namespace n, aclexplode(n.nspacl) a
                 WHERE n.nspname = 'reghook' AND a.grantee = old_oid LOOP
            EXECUTE format('GRANT %s ON SCHEMA reghook TO %I%s', r.privilege_type, new_role,
                           CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        FOR r IN SELECT p.polname, p.polrelid::regclass AS tbl,
                        (SELECT string_agg(CASE WHEN x = 0 THEN 'PUBLIC'
                                                WHEN x = old_oid THEN quote_ident(new_role)
                                                ELSE quote_ident(pg_get_userbyid(x)) END, ', ')
                         FROM unnest(p.polroles) x) AS roles
                 FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'reghook' AND old_oid = ANY (p.polroles) LOOP
            EXECUTE format('ALTER POLICY %I ON %s TO %s', r.polname, r.tbl, r.roles);
        END LOOP;
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA reghook FROM %I', old_role);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA reghook FROM %I', old_role);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA reghook FROM %I', old_role);
        EXECUTE format('REVOKE ALL ON SCHEMA reghook FROM %I', old_role);

        -- Its members keep their access here, if this database was in use.
        CONTINUE WHEN NOT in_use;
        FOR r IN SELECT m.member, m.admin_option FROM pg_auth_members m
                 WHERE m.roleid = old_oid AND m.member <> (SELECT oid FROM pg_roles WHERE rolname = new_role)
                   -- The migrating role (the creator of both, on PostgreSQL 16) has what it needs.
                   AND m.member <> (SELECT oid FROM pg_roles WHERE rolname = current_user) LOOP
            EXECUTE format('GRANT %I TO %I%s', new_role, pg_get_userbyid(r.member),
                           CASE WHEN r.admin_option THEN ' WITH ADMIN OPTION' ELSE '' END);
            RAISE WARNING 'role % is now a member of %, as it was of %, which other reghook databases may share',
                quote_ident(pg_get_userbyid(r.member)), quote_ident(new_role), old_role
                USING HINT = format('If it should not have %s access to database %s, REVOKE %s FROM %s.',
                                    kind, quote_ident(db), quote_ident(new_role),
                                    quote_ident(pg_get_userbyid(r.member)));
        END LOOP;
    END LOOP;

    -- Only the database's own roles (and its owner) connect to it.
    IF pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE oid = db_oid), 'MEMBER') THEN
        EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', db);
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I', db, reghook.role_name('admin'),
                       reghook.role_name('dispatcher'), reghook.role_name('member'));
    ELSE
        RAISE WARNING 'CONNECT to database % is left to PUBLIC: only its owner may revoke it', quote_ident(db)
            USING HINT = format('As the owner: REVOKE CONNECT ON DATABASE %1$s FROM PUBLIC; '
                                'GRANT CONNECT ON DATABASE %1$s TO %2$s, %3$s, %4$s;', quote_ident(db),
                                quote_ident(reghook.role_name('admin')), quote_ident(reghook.role_name('dispatcher')),
                                quote_ident(reghook.role_name('member')));
    END IF;
END
$$;

-- --- the functions that name a group role ------------------------------------
-- access_level: admins are the members of this database's admin role.
CREATE OR REPLACE FUNCTION reghook.access_level(ns bigint, who name) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN NOT pg_has_role(session_user, who, 'MEMBER') THEN 0
        WHEN pg_has_role(who, (SELECT g.role_name FROM reghook.group_roles g WHERE g.kind = 'admin'), 'MEMBER')
          OR pg_has_role(who, (SELECT nspowner FROM pg_namespace WHERE nspname = 'reghook'), 'MEMBER')
        THEN 4
        ELSE coalesce((
            SELECT max(CASE m.access WHEN 'owner' THEN 3 WHEN 'contributor' THEN 2 ELSE 1 END)
            FROM reghook.namespace_members m
            JOIN pg_roles r ON r.rolname = m.role_name
            WHERE m.namespace_id = ns AND pg_has_role(who, r.oid, 'MEMBER')), 0)
    END
$$;

CREATE OR REPLACE FUNCTION reghook.access_name(level integer) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT (ARRAY['viewer', 'contributor', 'owner',
                  (SELECT g.role_name FROM reghook.group_roles g WHERE g.kind = 'admin')])[level]
$$;

-- namespace_grant makes the role a member of this database's member role.
CREATE OR REPLACE FUNCTION reghook.namespace_grant(namespace text, role_name name, access text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns_id bigint := reghook.require_namespace(namespace_grant.namespace, 3);
    member_role name := (SELECT g.role_name FROM reghook.group_roles g WHERE g.kind = 'member');
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
    IF NOT pg_has_role(namespace_grant.role_name, member_role, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', member_role, namespace_grant.role_name);
    END IF;
END
$$;

-- --- who may call what ---------------------------------------------------------
-- Exactly the lists of README (SQL interface). PUBLIC calls nothing, now or
-- later: ALTER DEFAULT PRIVILEGES ... IN SCHEMA (007) can only add to what
-- a schema gives, so the revoke is made for the roles that create the
-- functions, the schema owner and the migrating role.
DO $$
DECLARE
    schema_owner name := (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'reghook');
    admin name := reghook.role_name('admin');
    dispatcher name := reghook.role_name('dispatcher');
    member name := reghook.role_name('member');
BEGIN
    IF pg_has_role(current_user, schema_owner, 'MEMBER') THEN
        EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC',
                       schema_owner);
    END IF;
    IF current_user <> schema_owner THEN
        ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
    END IF;
    REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reghook FROM PUBLIC;
    EXECUTE format('REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reghook FROM %I, %I, %I', admin, dispatcher, member);

    -- Admins: everything but the unchecked bodies of the management functions.
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA reghook TO %I', admin);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION reghook.webhook_set_headers_unchecked(bigint, text[]), '
                   'reghook.webhook_set_unchecked(bigint, jsonb), reghook.webhook_enable_unchecked(bigint), '
                   'reghook.webhook_disable_unchecked(bigint, text), reghook.webhook_remove_unchecked(bigint), '
                   'reghook.test_webhook_unchecked(bigint) FROM %I', admin);
    -- The dispatcher: the receiver, the queue, callbacks and retention.
    EXECUTE format('GRANT EXECUTE ON FUNCTION reghook.ingest(jsonb), reghook.path_prefixes(text), '
                   'reghook.glob_match(text, text), '
                   'reghook.claim_deliveries(text, integer, integer, jsonb, integer), '
                   'reghook.reclaim_expired(integer), reghook.release_deliveries(text, uuid[]), '
                   'reghook.complete_deliveries(text, json), '
                   'reghook.record_callback(text, text, text, text, text), '
                   'reghook.prune_history(interval, integer), reghook.role_name(text) TO %I', dispatcher);
    -- Members: the checked management functions, and access_level(), which
    -- their row-level security policies call. The helpers those functions
    -- use run as the schema owner and need no grant.
    EXECUTE format('GRANT EXECUTE ON FUNCTION reghook.access_level(bigint, name), '
                   'reghook.webhook_add(text, text, jsonb), reghook.webhook_set(bigint, jsonb), '
                   'reghook.webhook_set_headers(bigint, text[]), reghook.webhook_enable(bigint), '
                   'reghook.webhook_disable(bigint, text), reghook.webhook_remove(bigint), '
                   'reghook.test_webhook(bigint), reghook.namespace_grant(text, name, text), '
                   'reghook.namespace_revoke(text, name), reghook.retrigger(uuid), '
                   'reghook.retrigger_failed(bigint, timestamptz), reghook.role_name(text) TO %I', member);
END
$$;
