-- webhooks: managing webhooks with SQL (the CLI's `webhook` commands wrap
-- these functions).
--
-- A new webhook starts disabled; enabling it does not replay events that
-- arrived while it was disabled. Each management function checks the
-- caller's access first (require_webhook, require_namespace: access.sql)
-- and runs as the schema owner: contributors and up manage webhooks, and
-- may set a password or secret but never read one back.
--
-- Credentials written into a URL (https://user:pass@host/) are secrets
-- like --password: they move to username and webhook_secrets, and the URL
-- is kept without them. url_credentials() gives them as webhook_set()
-- changes (percent-decoded), url_without_credentials() the URL. The user
-- information ends at the last @ before the path: a password may hold a
-- raw @ (curl reads it so too).
CREATE OR REPLACE FUNCTION reghook.percent_decode(s text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Each byte decoded takes at most 3 characters: past 3 KiB, the value
    -- is over the password's 1 KiB (the user name's is less), which
    -- check_webhook_values() says; refused here before any decoding.
    IF length(s) > 3 * 1024 THEN
        RAISE EXCEPTION 'url: the user name or password is over its limit (256 and 1024 bytes once percent-decoded)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- In one pass over the runs of the text, in order: a character at a
    -- time, each step copying what came before, took minutes on a long
    -- value (quadratic), holding the webhook's row meanwhile.
    RETURN convert_from(coalesce(
        (SELECT string_agg(CASE WHEN r.m[1] IS NOT NULL THEN decode(r.m[1], 'hex')
                                ELSE convert_to(r.m[2], 'UTF8') END, ''::bytea ORDER BY r.n)
         FROM regexp_matches(s, '%([0-9A-Fa-f]{2})|([^%]+|%)', 'g') WITH ORDINALITY AS r(m, n)),
        ''::bytea), 'UTF8');
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
    -- Which byte is not said: it is a piece of a credential.
    RAISE EXCEPTION 'url: the user name or password is not UTF-8 text once percent-decoded (%%00 cannot be in one either)'
        USING ERRCODE = 'invalid_parameter_value';
END
$$;

CREATE OR REPLACE FUNCTION reghook.url_without_credentials(url text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT regexp_replace(url, '^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@', '\1')
$$;

CREATE OR REPLACE FUNCTION reghook.url_credentials(url text) RETURNS jsonb
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

-- A URL's scheme in lower case (RFC 3986 3.1: HTTPS:// is https://), as
-- the webhooks' check and the dispatcher take it.
CREATE OR REPLACE FUNCTION reghook.url_scheme_lowered(url text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(lower(m[1]) || substr(url, length(m[1]) + 1), url)
    FROM (SELECT regexp_match(url, '^([a-zA-Z][a-zA-Z0-9+.-]*:)') AS m) x
$$;

-- Changes as webhook_set() takes them, with credentials out of the url
-- (options given on their own, --username say, win over the URL's).
CREATE OR REPLACE FUNCTION reghook.changes_without_url_credentials(changes jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN jsonb_typeof(changes) = 'object' AND jsonb_typeof(changes -> 'url') = 'string'
                THEN reghook.url_credentials(changes ->> 'url') || changes
                     || jsonb_build_object('url', reghook.url_scheme_lowered(
                            reghook.url_without_credentials(changes ->> 'url')))
                ELSE changes END
$$;

-- At most n bytes of s, whole characters.
CREATE OR REPLACE FUNCTION reghook.left_bytes(s text, n integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    out text := left(s, n);
BEGIN
    WHILE octet_length(out) > n LOOP
        out := left(out, -1);
    END LOOP;
    RETURN out;
END
$$;

-- check_webhook_values: refuses, as a bad value, a field of changes (as
-- webhook_set() takes them) longer than a webhook may hold, and a URL with
-- whitespace or a control character (which the dispatcher would refuse at
-- each delivery). The limits, in bytes: the dispatcher holds every field
-- for each request in flight, and the history records the request, so
-- that one contributor's 64 MB content type slowed every namespace's
-- deliveries. A header's are webhook_set_headers()'s.
CREATE OR REPLACE FUNCTION reghook.check_webhook_values(c jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f text;
    lim integer;
    n integer;
    hostport text;
    port text;
BEGIN
    FOR f, lim IN VALUES ('name', 200), ('url', 8192), ('content_type', 255), ('username', 256),
                         ('password', 1024), ('secret', 1024), ('repository', 1024), ('tag', 1024) LOOP
        -- Text, or null where null clears: an array's or a number's text is no value.
        IF jsonb_typeof(c -> f) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION '%: a JSON string, not %', f, jsonb_typeof(c -> f)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- The webhook's own columns (no null there) take no null: the
        -- table's NOT NULL named a column, not the field.
        IF jsonb_typeof(c -> f) = 'null' AND f IN ('name', 'url', 'content_type', 'repository', 'tag') THEN
            RAISE EXCEPTION '%: a JSON string, not null', f
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        n := octet_length(c ->> f);
        IF n > lim THEN
            RAISE EXCEPTION '% is % bytes, over the limit of %', f, n, lim
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    -- Decodable as the dispatcher decodes it (common/sign.c): padding
    -- optional, and right when given.
    IF c ->> 'secret' <> '' AND (c ->> 'secret' = 'whsec_' OR c ->> 'secret' !~
            '^whsec_([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}(==)?|[A-Za-z0-9+/]{3}=?)?$') THEN
        RAISE EXCEPTION 'secret: not a signing key (whsec_ and its base64)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A tag glob that no tag can match: tags are never empty and hold no '/'
    -- (a repository glob may be empty: a repository that is its namespace
    -- has an empty name below it).
    IF c ->> 'tag' = '' THEN
        RAISE EXCEPTION 'tag: an empty glob matches no tag; * matches every one'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF c ->> 'tag' LIKE '%/%' THEN
        RAISE EXCEPTION 'tag: a tag holds no ''/'', so this glob matches none'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The other fields' types and values, each named: the table's checks
    -- name only themselves, and a cast or an array function nothing.
    -- CASE: the array functions fail on anything else, and OR may
    -- evaluate its operands in any order.
    IF c ? 'actions' AND (CASE WHEN jsonb_typeof(c -> 'actions') IS DISTINCT FROM 'array' THEN true
                               ELSE jsonb_array_length(c -> 'actions') NOT BETWEEN 1 AND 2
                                    OR EXISTS (SELECT 1 FROM jsonb_array_elements(c -> 'actions') a
                                               WHERE a NOT IN ('"push"'::jsonb, '"delete"'::jsonb))
                                    OR (SELECT count(DISTINCT a) <> count(*)
                                        FROM jsonb_array_elements(c -> 'actions') a) END) THEN
        RAISE EXCEPTION 'actions: push, delete, or both, each once (a JSON array of strings)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF c ? 'headers' AND jsonb_typeof(c -> 'headers') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'headers: a JSON array of "Name: value" strings ([] clears them)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR f, lim IN VALUES ('timeout_ms', 86400000), ('max_attempts', 100) LOOP
        IF jsonb_typeof(c -> f) IS DISTINCT FROM 'null' AND c ? f THEN
            -- A JSON number, or a string of digits, as the cast it replaced took.
            IF jsonb_typeof(c -> f) NOT IN ('number', 'string') OR (c ->> f) !~ '^[0-9]{1,9}$' THEN
                n := 0;
            ELSE
                n := (c ->> f)::integer;
            END IF;
            IF n NOT BETWEEN 1 AND lim THEN
                RAISE EXCEPTION '%: a whole number from 1 to %, or null for the configuration''s %', f, lim,
                    CASE f WHEN 'timeout_ms' THEN 'request_timeout' ELSE 'max_attempts' END
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;
    END LOOP;
    IF c ? 'format' AND (jsonb_typeof(c -> 'format') IS DISTINCT FROM 'string'
                         OR c ->> 'format' NOT IN ('dockerhub', 'registry', 'cloudevents',
                             'cloudevents-structured', 'slack', 'discord', 'teams', 'template')) THEN
        RAISE EXCEPTION 'format: one of dockerhub, registry, cloudevents, cloudevents-structured, slack, discord, teams, template'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF c ? 'method' AND (jsonb_typeof(c -> 'method') IS DISTINCT FROM 'string'
                         OR upper(c ->> 'method') NOT IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')) THEN
        RAISE EXCEPTION 'method: one of GET, POST, PUT, PATCH, DELETE'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Header values and the content type go into the request as they are:
    -- no control character but a tab (RFC 9110's field values).
    IF c ->> 'content_type' ~ '[\x01-\x08\x0a-\x1f\x7f]' THEN
        RAISE EXCEPTION 'content_type: a control character' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The user name goes into the Authorization header's credentials, and
    -- into lists and the history: no line break (the table's check refused
    -- one, naming only itself) nor other control character.
    IF c ->> 'username' ~ '[\x01-\x1f\x7f]' THEN
        RAISE EXCEPTION 'username: a control character' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF c ->> 'url' ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'url: whitespace or a control character; percent-encode it (%%20 for a space)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Basic authentication sends user:password, so a ':' in the user name
    -- would move the rest into the password (RFC 7617).
    IF position(':' IN c ->> 'username') > 0 THEN
        RAISE EXCEPTION 'username: a user name cannot hold '':'' (basic authentication sends user:password)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- As the table's check, named (its scheme is lower case by now:
    -- url_scheme_lowered()).
    IF c ->> 'url' !~ '^https?://[^/?#]+' THEN
        RAISE EXCEPTION 'url: not an http:// or https:// URL with a host'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- As urltemplate_check() says: whoever pushes a tag would choose the host.
    hostport := regexp_replace(regexp_replace(substring(c ->> 'url' FROM '^[^:/?#]*://([^/?#]*)'),
                                              '^.*@', ''),
                               '\{(namespace|action)\}', 'x', 'g');
    IF hostport ~ '[{}]' THEN
        RAISE EXCEPTION 'url: a variable in the host or port other than {namespace} and {action}; whoever pushes would choose where the request goes'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- As urltemplate_check_target() says: what an HTTP client can send.
    IF hostport ~ '[^\x01-\x7f]' THEN
        RAISE EXCEPTION 'url: the host holds a character that is not ASCII: give an internationalized name in its ASCII form (xn--...)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF hostport !~ '^([A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%25[A-Za-z0-9._~-]+)?\])(:[0-9]*)?$' THEN
        RAISE EXCEPTION 'url: the host is not a host name, an IPv4 address or an IPv6 address in brackets (http://[::1]:8080/), or a '':'' follows the port'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF hostport ~ '^\[' THEN
        BEGIN
            PERFORM substring(hostport FROM '^\[([^]%]*)')::inet;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'url: the host is not a host name, an IPv4 address or an IPv6 address in brackets (http://[::1]:8080/), or a '':'' follows the port'
                USING ERRCODE = 'invalid_parameter_value';
        END;
        IF family(substring(hostport FROM '^\[([^]%]*)')::inet) <> 6 THEN
            RAISE EXCEPTION 'url: the host is not a host name, an IPv4 address or an IPv6 address in brackets (http://[::1]:8080/), or a '':'' follows the port'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    port := substring(hostport FROM CASE WHEN hostport ~ '^\[' THEN '\]:([0-9]*)$' ELSE ':([0-9]*)$' END);
    IF port <> '' AND (length(port) > 5 OR port::integer NOT BETWEEN 1 AND 65535) THEN
        RAISE EXCEPTION 'url: the port is not a number from 1 to 65535'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Braces are the variables' only: the table's check (webhook_url_template) named itself.
    IF regexp_replace(c ->> 'url', '\{(namespace|name|repository|tag|digest|action)\}', '', 'g') ~ '[{}]' THEN
        RAISE EXCEPTION 'url: a { or } that is not one of {namespace} {name} {repository} {tag} {digest} {action}; percent-encode a brace (%%7B, %%7D)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF substring(c ->> 'url' FROM '^[^:/?#]*://[^/?#]*(.*)$') ~ '[^\x01-\x7f]|["<>\\^`|]' THEN
        RAISE EXCEPTION 'url: a character that cannot be in a URL (beyond ASCII, or one of " < > \ ^ ` |): percent-encode it'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- What the JSON of a template (j, inside depth containers) has that the
-- dispatcher's strict reading refuses and jsonb lets by (dispatcher/
-- template.h): a key twice in one object, containers nested more than 32
-- deep. NULL if none.
CREATE OR REPLACE FUNCTION reghook.template_json_problem(j json, depth integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    v json;
    seen text[] := '{}';
    problem text;
BEGIN
    -- As the dispatcher's parser (common/jsonparse.h): json keeps a number's text.
    IF json_typeof(j) = 'number' AND (length(j::text) > 40 OR
       coalesce(substring(j::text FROM '[eE][+-]?([0-9]+)$')::numeric, 0) > 20) THEN
        RETURN format('number %s out of range: at most 40 characters, exponent within +-20',
                      left(j::text, 24));
    END IF;
    IF json_typeof(j) NOT IN ('object', 'array') THEN
        RETURN NULL;
    END IF;
    IF depth >= 32 THEN
        RETURN 'JSON nested deeper than 32 levels';
    END IF;
    -- An object's members, or an array's elements (with no key).
    FOR k, v IN SELECT e.key, e.value
                FROM json_each(CASE WHEN json_typeof(j) = 'object' THEN j ELSE '{}' END) e
                UNION ALL
                SELECT NULL, a
                FROM json_array_elements(CASE WHEN json_typeof(j) = 'array' THEN j ELSE '[]' END) a
    LOOP
        IF k = ANY (seen) THEN
            RETURN format('duplicate key "%s"', left(k, 64));
        END IF;
        seen := seen || k;
        problem := reghook.template_json_problem(v, depth + 1);
        IF problem IS NOT NULL THEN
            RETURN problem;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- template_problem: what is wrong with a webhook template, NULL if
-- nothing is, for SQL users who call webhook_set() directly (the CLI has
-- checked it already, with the line and column). reghook checks it again
-- when it renders: a template that passes here but not there makes its
-- deliveries fail with reghook's message.
CREATE OR REPLACE FUNCTION reghook.template_problem(t text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
    v text;
    known text[] := ARRAY['namespace', 'name', 'repository', 'tag', 'digest', 'action', 'actor',
                          'timestamp', 'pushed_at', 'media_type', 'size', 'event_id', 'delivery_id',
                          'registry_url', 'repo_url'];
BEGIN
    IF octet_length(t) > 16384 THEN
        RETURN format('the template is %s bytes, over the limit of 16384', octet_length(t));
    END IF;
    BEGIN
        PERFORM t::jsonb;
    EXCEPTION WHEN invalid_text_representation OR untranslatable_character THEN
        RETURN 'the template is not JSON';
    END;
    problem := reghook.template_json_problem(t::json, 0);
    IF problem IS NOT NULL THEN
        RETURN problem;
    END IF;
    -- A "{{" in a key as written, as the dispatcher looks for it: a string
    -- followed by a colon is a key ("{\u007b" is a literal "{{").
    SELECT m[1] INTO v FROM regexp_matches(t, '"((?:[^"\\]|\\.)*)"\s*:', 'g') AS m
    WHERE strpos(m[1], '{{') > 0 LIMIT 1;
    IF v IS NOT NULL THEN
        RETURN format('a variable in the key "%s": keys are copied as they are', left(v, 64));
    END IF;
    FOR v IN SELECT m[1] FROM regexp_matches(t, '\{\{ *([^{}]*?) *\}\}', 'g') AS m LOOP
        IF NOT v = ANY (known) THEN
            RETURN format('unknown variable {{%s}}', v);
        END IF;
    END LOOP;
    IF (SELECT count(*) FROM regexp_matches(t, '\{\{', 'g'))
       <> (SELECT count(*) FROM regexp_matches(t, '\{\{ *[^{}]*? *\}\}', 'g')) THEN
        RETURN '{{ without its variable name and }}';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reghook.webhook_add(namespace text, url text, changes jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns_id bigint := reghook.require_namespace(webhook_add.namespace, 2);
    new_id bigint;
    bare text := reghook.url_scheme_lowered(reghook.url_without_credentials(webhook_add.url));
BEGIN
    IF nullif(webhook_add.url, '') IS NULL THEN
        RAISE EXCEPTION 'url: a webhook needs one' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A url among the changes replaced the one given (and took its credentials to its host).
    IF jsonb_typeof(changes) = 'object' AND changes ? 'url' THEN
        RAISE EXCEPTION 'url: give it as webhook_add''s url argument, not among the changes'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM reghook.check_webhook_values(jsonb_build_object('url', bare));
    -- Named after the URL's host, an IPv6 one with its brackets.
    INSERT INTO reghook.webhooks (namespace_id, name, url)
    VALUES (ns_id, reghook.left_bytes(coalesce(substring(bare FROM '^[a-zA-Z]+://(\[[^]/?#]*\]|[^/:?#]+)'),
                                               bare), 200),
            bare)
    RETURNING id INTO new_id;
    PERFORM reghook.webhook_set(new_id, reghook.url_credentials(webhook_add.url) || coalesce(changes, '{}'));
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION reghook.webhook_add(text, text, jsonb) IS
    'Adds a webhook (disabled) to a namespace, with optional fields as in webhook_set(); returns its id. Contributors.';

-- lock_webhook: the webhook's row, locked for a person's change until the
-- transaction ends (FOR NO KEY UPDATE: the ingest's deliveries, whose key
-- checks share it, are not held up), or 'does not exist' (removed, or
-- removed by a transaction this one waited for).
CREATE OR REPLACE FUNCTION reghook.lock_webhook(webhook bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM reghook.webhooks w WHERE w.id = webhook FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.lock_webhook(bigint) IS
    'Locks a webhook''s row for a change (webhook_set), or raises that it does not exist.';

-- webhook_set applies `changes` (a JSON object of field: value) to a
-- webhook. Fields: name url method content_type username password secret
-- actions repository tag format template timeout_ms max_attempts headers.
-- JSON null clears the optional ones (username, password, secret,
-- timeout_ms, max_attempts, template). The webhook's password and header
-- values go only where they were given for: a new URL (another host, where
-- a contributor could read them from the next request, or another path or
-- query of the same host, which a contributor could call with them and read
-- the answer from the history) or a new method must give them again (or
-- clear them) at the same time. The webhook's row is locked first, so that
-- that check reads what a change made at the same moment left (given a
-- password for the old URL, committed while this one waited): checked
-- before the lock, the new URL got the other's password. A change starts
-- the webhook's run of failures again, as README's Delivery rules say:
-- only attempts made since count (complete_deliveries()), and a webhook
-- resting after 20 failures at its old URL is tried at once at its new
-- one, not disabled by the 5-day rule at its first failure there.
CREATE OR REPLACE FUNCTION reghook.webhook_set(webhook bigint, changes jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c jsonb;
    cur record;
    k text;
    known text[] := ARRAY['name', 'url', 'method', 'content_type', 'username', 'password',
                          'secret', 'actions', 'repository', 'tag', 'format', 'timeout_ms',
                          'max_attempts', 'headers', 'template'];
    problem text;
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    PERFORM reghook.lock_webhook(webhook);
    c := reghook.changes_without_url_credentials(changes);
    IF jsonb_typeof(c) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'changes must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT jsonb_object_keys(c) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'unknown webhook field "%"', k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    -- A key given bare (base64 alone) is kept with its prefix, as --secret
    -- takes it: a JSON string only (true, 1234 are no key, and would pass as base64).
    IF jsonb_typeof(c -> 'secret') = 'string' AND c ->> 'secret' <> ''
       AND NOT starts_with(c ->> 'secret', 'whsec_') THEN
        c := c || jsonb_build_object('secret', 'whsec_' || (c ->> 'secret'));
    END IF;
    PERFORM reghook.check_webhook_values(c);
    -- After the values' own checks: a bad method is said as such, not as a new one.
    IF jsonb_typeof(c -> 'url') = 'string' OR jsonb_typeof(c -> 'method') = 'string' THEN
        SELECT w.url, w.method, s.password IS NOT NULL AS has_password,
               EXISTS (SELECT 1 FROM reghook.webhook_headers h WHERE h.webhook_id = w.id) AS has_headers
        INTO cur
        FROM reghook.webhooks w LEFT JOIN reghook.webhook_secrets s ON s.webhook_id = w.id
        WHERE w.id = webhook;
        IF (coalesce(c ->> 'url', cur.url) IS DISTINCT FROM cur.url
            OR upper(coalesce(c ->> 'method', cur.method)) IS DISTINCT FROM upper(cur.method))
           AND ((cur.has_password AND NOT c ? 'password') OR (cur.has_headers AND NOT c ? 'headers')) THEN
            RAISE EXCEPTION 'a new URL or method would get the webhook''s password and headers: give them again with it, or clear them'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'webhook set ID --url URL --password P --header ''Name: value'' (an empty --password, or --header '''', clears them).';
        END IF;
    END IF;
    IF c ? 'template' AND jsonb_typeof(c -> 'template') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'template must be given as a string holding the JSON template'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    problem := reghook.template_problem(c ->> 'template');
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'template: %', problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(c ->> 'format', (SELECT w.format FROM reghook.webhooks w WHERE w.id = webhook)) = 'template'
       AND (CASE WHEN c ? 'template' THEN c ->> 'template'
                 ELSE (SELECT w.template FROM reghook.webhooks w WHERE w.id = webhook) END) IS NULL THEN
        RAISE EXCEPTION 'format template needs a template' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'webhook set ID --format template --template FILE';
    END IF;
    UPDATE reghook.webhooks w SET
        name = CASE WHEN c ? 'name' THEN c->>'name' ELSE w.name END,
        url = CASE WHEN c ? 'url' THEN c->>'url' ELSE w.url END,
        method = CASE WHEN c ? 'method' THEN upper(c->>'method') ELSE w.method END,
        content_type = CASE WHEN c ? 'content_type' THEN c->>'content_type' ELSE w.content_type END,
        username = CASE WHEN c ? 'username' THEN nullif(c->>'username', '') ELSE w.username END,
        actions = CASE WHEN c ? 'actions'
                       THEN ARRAY(SELECT jsonb_array_elements_text(c->'actions')) ELSE w.actions END,
        repository_glob = CASE WHEN c ? 'repository' THEN c->>'repository' ELSE w.repository_glob END,
        tag_glob = CASE WHEN c ? 'tag' THEN c->>'tag' ELSE w.tag_glob END,
        format = CASE WHEN c ? 'format' THEN c->>'format' ELSE w.format END,
        template = CASE WHEN c ? 'template' THEN c->>'template' ELSE w.template END,
        timeout_ms = CASE WHEN c ? 'timeout_ms' THEN (c->>'timeout_ms')::integer ELSE w.timeout_ms END,
        max_attempts = CASE WHEN c ? 'max_attempts' THEN (c->>'max_attempts')::integer ELSE w.max_attempts END,
        failures_in_a_row = 0, failing_since = NULL,
        updated_at = now()
    WHERE w.id = webhook;
    IF c ? 'password' OR c ? 'secret' THEN
        INSERT INTO reghook.webhook_secrets AS s (webhook_id, password, secret)
        VALUES (webhook, nullif(c->>'password', ''), nullif(c->>'secret', ''))
        ON CONFLICT (webhook_id) DO UPDATE SET
            password = CASE WHEN c ? 'password' THEN excluded.password ELSE s.password END,
            secret = CASE WHEN c ? 'secret' THEN excluded.secret ELSE s.secret END;
    END IF;
    IF c ? 'headers' THEN
        -- It checks the user name and the new headers together.
        PERFORM reghook.webhook_set_headers(webhook,
            ARRAY(SELECT jsonb_array_elements_text(c->'headers')));
    ELSE
        PERFORM reghook.check_webhook_auth(webhook);
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.webhook_set(bigint, jsonb) IS
    'Changes fields of a webhook, given as a JSON object (name url method content_type username password secret '
    'actions repository tag format template timeout_ms max_attempts headers). Contributors.';

-- A webhook's own Authorization header and a user name (basic
-- authentication) cannot go together: libcurl then sends the header alone,
-- the password never went out, and the history listed both. Checked once
-- a change is made, by webhook_set() and webhook_set_headers().
CREATE OR REPLACE FUNCTION reghook.check_webhook_auth(webhook bigint) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM reghook.webhooks w
               JOIN reghook.webhook_headers h ON h.webhook_id = w.id
               WHERE w.id = webhook AND w.username IS NOT NULL AND lower(h.name) = 'authorization') THEN
        RAISE EXCEPTION 'headers: an Authorization header and a user name (basic authentication) cannot go together; give one of the two'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Replaces a webhook's headers with `headers`, each 'Name: value': at most
-- 64, each name at most 256 bytes and each value 8192. None may frame the
-- request or be one reghook sets itself (the dispatcher skips the same
-- names, dispatcher/request.c says why): a Content-Length of 0 desynchronised
-- the connection that other namespaces' deliveries shared.
CREATE OR REPLACE FUNCTION reghook.webhook_set_headers(webhook bigint, headers text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h text;
    pos integer := 0;
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    -- The row, locked as lock_webhook() would (and counted a change, as
    -- webhook_set's are: the run of failures starts again).
    UPDATE reghook.webhooks
    SET failures_in_a_row = 0, failing_since = NULL, updated_at = now()
    WHERE id = webhook;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
    IF cardinality(headers) > 64 THEN
        RAISE EXCEPTION '% headers, over the limit of 64', cardinality(headers)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM reghook.webhook_headers WHERE webhook_id = webhook;
    FOREACH h IN ARRAY coalesce(headers, '{}') LOOP
        -- A header's value may be a secret (a token): messages quote its
        -- name only, or its place in the list when it has no name.
        IF h IS NULL OR position(':' IN h) < 2 THEN
            RAISE EXCEPTION 'header % of the list is not "Name: value"', pos + 1
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF octet_length(split_part(h, ':', 1)) > 256
              OR octet_length(substr(h, position(':' IN h) + 1)) > 8192 THEN
            RAISE EXCEPTION 'header "%": a name over 256 bytes or a value over 8192',
                left(btrim(split_part(h, ':', 1), E' \t'), 64)
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF btrim(split_part(h, ':', 1), E' \t') !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]+$' THEN
            RAISE EXCEPTION 'header "%": not a field name (RFC 9110: letters, digits and !#$%%&''*+-.^_`|~)',
                left(btrim(split_part(h, ':', 1), E' \t'), 64)
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF substr(h, position(':' IN h) + 1) ~ '[\x01-\x08\x0a-\x1f\x7f]' THEN
            RAISE EXCEPTION 'header "%": a control character in its value', btrim(split_part(h, ':', 1), E' \t')
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF btrim(split_part(h, ':', 1), E' \t') ~* ('^(content-length|transfer-encoding|host|connection'
                  '|keep-alive|te|trailer|upgrade|expect|proxy-.*|content-type|user-agent|x-reghook-.*'
                  '|webhook-(id|timestamp|signature)|ce-(specversion|id|source|type|subject|time|actor))$') THEN
            RAISE EXCEPTION 'header "%": reghook sets it itself, or it frames the request', btrim(split_part(h, ':', 1), E' \t')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The body''s type is the webhook''s content_type (--content-type); basic auth is --username and --password.';
        END IF;
        pos := pos + 1;
        INSERT INTO reghook.webhook_headers (webhook_id, position, name, value)
        VALUES (webhook, pos, btrim(split_part(h, ':', 1), E' \t'), btrim(substr(h, position(':' IN h) + 1), E' \t'));
    END LOOP;
    PERFORM reghook.check_webhook_auth(webhook);
END
$$;
COMMENT ON FUNCTION reghook.webhook_set_headers(bigint, text[]) IS
    'Replaces a webhook''s extra headers; each element is ''Name: value''. Contributors.';

CREATE OR REPLACE FUNCTION reghook.webhook_enable(webhook bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    UPDATE reghook.webhooks
    SET enabled = true, disabled_reason = NULL, failing_since = NULL, failures_in_a_row = 0,
        updated_at = now()
    WHERE id = webhook;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.webhook_enable(bigint) IS
    'Enables a webhook: new events are delivered to it from now on. Contributors.';

CREATE OR REPLACE FUNCTION reghook.webhook_disable(webhook bigint, reason text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    IF octet_length(reason) > 1024 THEN
        RAISE EXCEPTION 'reason is % bytes, over the limit of 1024', octet_length(reason)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE reghook.webhooks
    SET enabled = false, disabled_reason = coalesce(reason, 'disabled by ' || session_user), updated_at = now()
    WHERE id = webhook;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.webhook_disable(bigint, text) IS
    'Disables a webhook: it gets no new deliveries; pending ones wait until it is enabled again. Contributors.';

CREATE OR REPLACE FUNCTION reghook.webhook_remove(webhook bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 2);
    DELETE FROM reghook.webhooks WHERE id = webhook;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION reghook.webhook_remove(bigint) IS
    'Removes a webhook with its deliveries and their history. Contributors.';

-- test_webhook: queues a test push to a webhook (enabled or not) and wakes
-- the dispatchers; returns the delivery id.
CREATE OR REPLACE FUNCTION reghook.test_webhook(webhook_id bigint) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE new_id uuid;
BEGIN
    PERFORM reghook.require_webhook(webhook_id, 2);
    -- As the insert's foreign key check would lock it, but answered: a
    -- webhook removed meanwhile (committed while this waited) does not exist.
    PERFORM FROM reghook.webhooks w WHERE w.id = test_webhook.webhook_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_id USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO reghook.deliveries (webhook_id, event_id, action, is_test)
    VALUES (webhook_id, NULL, 'push', true)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION reghook.test_webhook(bigint) IS
    'Queues a test push (repository <namespace>/reghook-test, tag test) to a webhook, enabled or not, '
    'and wakes the dispatchers; returns the delivery id. Contributors.';

-- webhook_secret_state: whether a webhook has a password and a signing
-- secret, for everyone who may see the webhook (viewers read no
-- webhook_secrets), never their values.
CREATE OR REPLACE FUNCTION reghook.webhook_secret_state(webhook bigint,
                                             OUT has_password boolean, OUT has_secret boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM reghook.require_webhook(webhook, 1);
    SELECT s.password IS NOT NULL, s.secret IS NOT NULL INTO has_password, has_secret
    FROM reghook.webhook_secrets s WHERE s.webhook_id = webhook;
    has_password := coalesce(has_password, false);
    has_secret := coalesce(has_secret, false);
END
$$;
COMMENT ON FUNCTION reghook.webhook_secret_state(bigint) IS
    'Whether a webhook has a basic auth password and a signing secret (never their values). Viewers.';
