-- sources: the registries allowed to post events, each with its own bearer
-- token, stored only as its SHA-256.

-- A registry source's bearer token: rgh_ and 64 hex digits (244 random bits).
CREATE OR REPLACE FUNCTION reghook.new_registry_token() RETURNS text
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'rgh_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
$$;
COMMENT ON FUNCTION reghook.new_registry_token() IS
    'A new bearer token for a registry source (registry_add, registry_rotate).';

CREATE OR REPLACE FUNCTION reghook.registry_add(name text, namespaces text[] DEFAULT NULL)
RETURNS TABLE (id bigint, token text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text;
    new_token text := reghook.new_registry_token();
    new_id bigint;
BEGIN
    IF registry_add.name IS NULL OR registry_add.name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid registry name "%"', left(registry_add.name, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '1 to 63 letters, digits, ".", "_" or "-", the first a letter or digit.';
    END IF;
    -- An empty scope, or one with a NULL name, would refuse every event.
    IF cardinality(namespaces) = 0 OR array_position(namespaces, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'namespaces: give their names, or NULL for all'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s INTO missing FROM unnest(namespaces) AS s
    WHERE NOT EXISTS (SELECT 1 FROM reghook.namespaces n WHERE n.name = s) LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'namespace "%" does not exist', missing
            USING ERRCODE = 'foreign_key_violation', HINT = 'Add it first with namespace add.';
    END IF;
    IF EXISTS (SELECT 1 FROM reghook.registry_sources r WHERE r.name = registry_add.name) THEN
        RAISE EXCEPTION 'registry "%" already exists', registry_add.name USING ERRCODE = 'unique_violation';
    END IF;
    BEGIN
        INSERT INTO reghook.registry_sources (name, token_sha256, namespaces)
        VALUES (registry_add.name, sha256(convert_to(new_token, 'UTF8')), registry_add.namespaces)
        RETURNING registry_sources.id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        -- Added by another session between the test above and the insert.
        RAISE EXCEPTION 'registry "%" already exists', registry_add.name USING ERRCODE = 'unique_violation';
    END;
    RETURN QUERY SELECT new_id, new_token;
END
$$;
COMMENT ON FUNCTION reghook.registry_add(text, text[]) IS
    'Creates a registry source; returns its bearer token, which is stored only as a SHA-256 hash.';

-- registry_rotate: a new token for a registry source, its history kept;
-- the old token is refused from the commit on (the receivers reload on the
-- NOTIFY below). Also how a token is revoked: rotate it, and use the new
-- one nowhere.
CREATE OR REPLACE FUNCTION reghook.registry_rotate(name text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_token text := reghook.new_registry_token();
BEGIN
    UPDATE reghook.registry_sources r SET token_sha256 = sha256(convert_to(new_token, 'UTF8'))
    WHERE r.name = registry_rotate.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'registry "%" does not exist', left(registry_rotate.name, 64)
            USING ERRCODE = 'no_data_found', HINT = 'reghook registry list shows them.';
    END IF;
    RETURN new_token;
END
$$;
COMMENT ON FUNCTION reghook.registry_rotate(text) IS
    'Gives a registry source a new bearer token (returned once) and refuses the old one; its history stays.';

-- Registry sources are cached by the receivers; a change tells them to reload.
CREATE OR REPLACE FUNCTION reghook.notify_sources() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('reghook_sources', '');
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER registry_sources_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON reghook.registry_sources
    FOR EACH STATEMENT EXECUTE FUNCTION reghook.notify_sources();
