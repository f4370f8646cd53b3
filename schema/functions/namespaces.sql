-- namespaces: registering them and granting people access to them.
--
-- Namespaces are the unit of routing and of authorization: a repository
-- belongs to the longest registered namespace that prefixes its path
-- (ingest.sql), and people see the namespaces they are members of. Admins
-- register namespaces; a namespace's owners manage its members.

CREATE OR REPLACE FUNCTION reghook.namespace_add(name text, description text DEFAULT '', is_private boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE new_id bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM reghook.namespaces n WHERE n.name = namespace_add.name) THEN
        RAISE EXCEPTION 'namespace "%" already exists', namespace_add.name USING ERRCODE = 'unique_violation';
    END IF;
    INSERT INTO reghook.namespaces (name, description, is_private)
    VALUES (namespace_add.name, coalesce(namespace_add.description, ''), coalesce(namespace_add.is_private, false))
    RETURNING id INTO new_id;
    RETURN new_id;
EXCEPTION WHEN check_violation THEN
    RAISE EXCEPTION 'invalid namespace name "%"', namespace_add.name
        USING ERRCODE = 'check_violation',
              HINT = 'Lower-case path components of letters, digits and single separators . _ __ -, joined by /.';
-- Added by another session between the test above and the insert.
WHEN unique_violation THEN
    RAISE EXCEPTION 'namespace "%" already exists', namespace_add.name USING ERRCODE = 'unique_violation';
END
$$;
COMMENT ON FUNCTION reghook.namespace_add(text, text, boolean) IS 'Registers a namespace.';

-- namespace_grant also makes the role a member of this database's member
-- role, which is what lets it read the schema at all.
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
    -- PostgreSQL's predefined roles (pg_read_all_data, pg_database_owner, ...)
    -- are no one's login; pg_database_owner cannot even be a member.
    IF starts_with(namespace_grant.role_name, 'pg_') THEN
        RAISE EXCEPTION 'role "%" is one of PostgreSQL''s predefined roles: grant a role of yours',
            namespace_grant.role_name USING ERRCODE = 'invalid_parameter_value';
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
COMMENT ON FUNCTION reghook.namespace_grant(text, name, text) IS
    'Grants a role owner, contributor or viewer access to a namespace (replacing its earlier access). Owners.';

-- namespace_revoke takes back, with a role's last namespace, the member
-- role that namespace_grant gave it: without a namespace it has no business
-- in this database (it could still LISTEN, NOTIFY and hold a transaction
-- open: README, Limits).
CREATE OR REPLACE FUNCTION reghook.namespace_revoke(namespace text, role_name name) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns_id bigint := reghook.require_namespace(namespace, 3);
    member_role name := (SELECT g.role_name FROM reghook.group_roles g WHERE g.kind = 'member');
BEGIN
    DELETE FROM reghook.namespace_members m
    WHERE m.namespace_id = ns_id AND m.role_name = namespace_revoke.role_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" has no access to namespace "%"', role_name, namespace
            USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM reghook.namespace_members m
                   WHERE m.role_name = namespace_revoke.role_name)
       AND EXISTS (SELECT 1 FROM pg_auth_members a
                   JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles r ON r.oid = a.member
                   WHERE g.rolname = member_role AND r.rolname = namespace_revoke.role_name) THEN
        EXECUTE format('REVOKE %I FROM %I', member_role, namespace_revoke.role_name);
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.namespace_revoke(text, name) IS 'Takes a role''s access to a namespace away. Owners.';
