-- sources: the registries allowed to post events, each with its own bearer
-- token, stored only as its SHA-256.

CREATE OR REPLACE FUNCTION reghook.registry_add(name text, namespaces text[] DEFAULT NULL)
RETURNS TABLE (id bigint, token text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text;
    new_token text := 'rgh_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    new_id bigint;
BEGIN
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
    INSERT INTO reghook.registry_sources (name, token_sha256, namespaces)
    VALUES (registry_add.name, sha256(convert_to(new_token, 'UTF8')), registry_add.namespaces)
    RETURNING registry_sources.id INTO new_id;
    RETURN QUERY SELECT new_id, new_token;
END
$$;
COMMENT ON FUNCTION reghook.registry_add(text, text[]) IS
    'Creates a registry source; returns its bearer token, which is stored only as a SHA-256 hash.';

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
