-- 008_database_roles: group roles of this database only.
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
-- users and the command line which they are (schema/functions/access.sql,
-- with derived_role_name(), the rule this migration applies).
--
-- What the group roles may do is schema/functions/authz.sql's business.
-- The old roles keep nothing in this database; a database that already
-- holds namespaces or registry sources (one migrated by an earlier
-- reghook, not named reghook) also moves the members of the old group
-- roles to its new roles, so that nobody loses access. A new database
-- takes no members from the old roles: those belong to other databases.
--
-- CONNECT to the database is no longer PUBLIC's: its own group roles (and
-- its owner) have it.

CREATE TABLE reghook.group_roles (
    kind      text PRIMARY KEY CHECK (kind IN ('admin', 'dispatcher', 'member')),
    role_name name NOT NULL UNIQUE
);
COMMENT ON TABLE reghook.group_roles IS
    'The group roles of this database (cluster-wide roles bound to it), read through role_name().';
COMMENT ON COLUMN reghook.group_roles.kind IS 'admin, dispatcher or member.';
COMMENT ON COLUMN reghook.group_roles.role_name IS 'The PostgreSQL role.';

-- --- the roles, bound to this database ---------------------------------------
DO $$
DECLARE
    db name := current_database();
    db_oid oid := (SELECT oid FROM pg_database WHERE datname = current_database());
    in_use boolean := EXISTS (SELECT 1 FROM reghook.namespaces) OR EXISTS (SELECT 1 FROM reghook.registry_sources);
    -- The names, as derived_role_name() (access.sql) gives them.
    names name[] := ARRAY(SELECT CASE WHEN db = 'reghook' THEN 'reghook_' || k
                                      -- 'reghook_dispatcher_' is 19 bytes of the 63 a name may have.
                                      WHEN octet_length(db) <= 44 THEN 'reghook_' || k || '_' || db
                                      ELSE 'reghook_' || k || '_' || md5(db) END::name
                          FROM unnest(ARRAY['admin', 'dispatcher', 'member']) WITH ORDINALITY AS x(k, n)
                          ORDER BY n);
    kinds text[] := ARRAY['admin', 'dispatcher', 'member'];
    kind text;
    new_role name;
    old_role name;
    old_oid oid;
    bound_to oid;
    r record;
BEGIN
    FOR i IN 1..3 LOOP
        kind := kinds[i];
        new_role := names[i];
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
                                        quote_ident(names[1]), quote_ident(names[2]), quote_ident(names[3]));
            END;
        END IF;
        EXECUTE format('COMMENT ON ROLE %I IS %L', new_role,
                       format('reghook: the %s role of database %s (database oid %s)', kind, quote_ident(db), db_oid));
        INSERT INTO reghook.group_roles VALUES (kind, new_role);

        old_oid := (SELECT oid FROM pg_roles WHERE rolname = old_role);
        CONTINUE WHEN new_role = old_role OR old_oid IS NULL;

        -- What 006 granted to the old role in this database goes (authz.sql
        -- gives the new one its privileges and policies).
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
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I', db, names[1], names[2], names[3]);
    ELSE
        RAISE WARNING 'CONNECT to database % is left to PUBLIC: only its owner may revoke it', quote_ident(db)
            USING HINT = format('As the owner: REVOKE CONNECT ON DATABASE %1$s FROM PUBLIC; '
                                'GRANT CONNECT ON DATABASE %1$s TO %2$s, %3$s, %4$s;', quote_ident(db),
                                quote_ident(names[1]), quote_ident(names[2]), quote_ident(names[3]));
    END IF;
END
$$;
