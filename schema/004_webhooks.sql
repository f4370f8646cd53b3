-- 004_webhooks: managing webhooks with SQL (the CLI's `webhook` commands
-- wrap these functions). A new webhook starts disabled; enabling it does
-- not replay events that arrived while it was disabled.

ALTER TABLE reghook.webhooks ADD CONSTRAINT webhook_url_template
    CHECK (regexp_replace(url, '\{(namespace|name|repository|tag|digest|action)\}', '', 'g') !~ '[{}]');

-- Replaces a webhook's headers with `headers`, each 'Name: value'.
CREATE FUNCTION reghook.webhook_set_headers(webhook bigint, headers text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h text;
    pos integer := 0;
BEGIN
    DELETE FROM reghook.webhook_headers WHERE webhook_id = webhook;
    FOREACH h IN ARRAY coalesce(headers, '{}') LOOP
        IF position(':' IN h) < 2 THEN
            RAISE EXCEPTION 'header "%" is not "Name: value"', h USING ERRCODE = 'invalid_parameter_value';
        END IF;
        pos := pos + 1;
        INSERT INTO reghook.webhook_headers (webhook_id, position, name, value)
        VALUES (webhook, pos, btrim(split_part(h, ':', 1)), btrim(substr(h, position(':' IN h) + 1)));
    END LOOP;
END
$$;
COMMENT ON FUNCTION reghook.webhook_set_headers(bigint, text[]) IS
    'Replaces a webhook''s extra headers; each element is ''Name: value''.';

-- Applies `changes` (a JSON object of field: value) to a webhook. Fields:
-- name url method content_type username password secret actions
-- repository tag format timeout_ms max_attempts headers. JSON null clears
-- the optional ones (username, password, secret, timeout_ms, max_attempts).
CREATE FUNCTION reghook.webhook_set(webhook bigint, changes jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k text;
    known text[] := ARRAY['name', 'url', 'method', 'content_type', 'username', 'password',
                          'secret', 'actions', 'repository', 'tag', 'format', 'timeout_ms',
                          'max_attempts', 'headers'];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM reghook.webhooks WHERE id = webhook) THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
    IF jsonb_typeof(changes) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'changes must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT jsonb_object_keys(changes) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'unknown webhook field "%"', k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    UPDATE reghook.webhooks w SET
        name = CASE WHEN changes ? 'name' THEN changes->>'name' ELSE w.name END,
        url = CASE WHEN changes ? 'url' THEN changes->>'url' ELSE w.url END,
        method = CASE WHEN changes ? 'method' THEN upper(changes->>'method') ELSE w.method END,
        content_type = CASE WHEN changes ? 'content_type' THEN changes->>'content_type' ELSE w.content_type END,
        username = CASE WHEN changes ? 'username' THEN nullif(changes->>'username', '') ELSE w.username END,
        actions = CASE WHEN changes ? 'actions'
                       THEN ARRAY(SELECT jsonb_array_elements_text(changes->'actions')) ELSE w.actions END,
        repository_glob = CASE WHEN changes ? 'repository' THEN changes->>'repository' ELSE w.repository_glob END,
        tag_glob = CASE WHEN changes ? 'tag' THEN changes->>'tag' ELSE w.tag_glob END,
        format = CASE WHEN changes ? 'format' THEN changes->>'format' ELSE w.format END,
        timeout_ms = CASE WHEN changes ? 'timeout_ms' THEN (changes->>'timeout_ms')::integer ELSE w.timeout_ms END,
        max_attempts = CASE WHEN changes ? 'max_attempts' THEN (changes->>'max_attempts')::integer ELSE w.max_attempts END,
        updated_at = now()
    WHERE w.id = webhook;
    IF changes ? 'password' OR changes ? 'secret' THEN
        INSERT INTO reghook.webhook_secrets AS s (webhook_id, password, secret)
        VALUES (webhook, nullif(changes->>'password', ''), nullif(changes->>'secret', ''))
        ON CONFLICT (webhook_id) DO UPDATE SET
            password = CASE WHEN changes ? 'password' THEN excluded.password ELSE s.password END,
            secret = CASE WHEN changes ? 'secret' THEN excluded.secret ELSE s.secret END;
    END IF;
    IF changes ? 'headers' THEN
        PERFORM reghook.webhook_set_headers(webhook,
            ARRAY(SELECT jsonb_array_elements_text(changes->'headers')));
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.webhook_set(bigint, jsonb) IS
    'Changes fields of a webhook, given as a JSON object; see the migration for the field names.';

-- Adds a webhook to a namespace, disabled. Returns its id.
CREATE FUNCTION reghook.webhook_add(namespace text, url text, changes jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ns_id bigint;
    new_id bigint;
BEGIN
    SELECT n.id INTO ns_id FROM reghook.namespaces n WHERE n.name = webhook_add.namespace;
    IF ns_id IS NULL THEN
        RAISE EXCEPTION 'namespace "%" does not exist', webhook_add.namespace USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO reghook.webhooks (namespace_id, name, url)
    VALUES (ns_id, coalesce(substring(webhook_add.url FROM '^[a-zA-Z]+://(?:[^@/]*@)?([^/:?#]+)'), webhook_add.url),
            webhook_add.url)
    RETURNING id INTO new_id;
    PERFORM reghook.webhook_set(new_id, coalesce(changes, '{}'));
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION reghook.webhook_add(text, text, jsonb) IS
    'Adds a webhook (disabled) to a namespace, with optional fields as in webhook_set(); returns its id.';

CREATE FUNCTION reghook.webhook_enable(webhook bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reghook.webhooks
    SET enabled = true, disabled_reason = NULL, failing_since = NULL, failures_in_a_row = 0,
        updated_at = now()
    WHERE id = webhook;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.webhook_enable(bigint) IS 'Enables a webhook: new events are delivered to it from now on.';

CREATE FUNCTION reghook.webhook_disable(webhook bigint, reason text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reghook.webhooks
    SET enabled = false, disabled_reason = coalesce(reason, 'disabled by ' || session_user), updated_at = now()
    WHERE id = webhook;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.webhook_disable(bigint, text) IS
    'Disables a webhook: it gets no new deliveries; pending ones wait until it is enabled again.';

CREATE FUNCTION reghook.webhook_remove(webhook bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM reghook.webhooks WHERE id = webhook;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.webhook_remove(bigint) IS 'Removes a webhook with its deliveries and their history.';
