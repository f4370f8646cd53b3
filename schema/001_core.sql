-- 001_core: reghook's tables.
--
-- Namespaces are the unit of routing and of authorization: a repository
-- belongs to the longest registered namespace that prefixes its path, and
-- people see the namespaces they are members of. Registry sources are the
-- registries allowed to post events. Events are what the registries sent
-- (push and delete only); a delivery is one event owed to one webhook, and
-- every try at it is an attempt.

CREATE TABLE reghook.namespaces (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE
        CONSTRAINT namespace_name_format
        CHECK (name ~ '^[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$'
               AND length(name) <= 255),
    description text NOT NULL DEFAULT '',
    is_private  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE reghook.namespaces IS
    'Registered namespaces: path prefixes of repositories whose events reghook keeps and delivers.';
COMMENT ON COLUMN reghook.namespaces.name IS
    'Repository path prefix, whole components (team-a, or team-a/sub); repositories under it belong to it unless a longer namespace matches.';
COMMENT ON COLUMN reghook.namespaces.description IS 'Shown as repository.description in Docker Hub payloads.';
COMMENT ON COLUMN reghook.namespaces.is_private IS 'Shown as repository.is_private in Docker Hub payloads.';
COMMENT ON COLUMN reghook.namespaces.created_at IS 'When the namespace was registered; repository.date_created in payloads.';

CREATE TABLE reghook.namespace_members (
    namespace_id bigint NOT NULL REFERENCES reghook.namespaces ON DELETE CASCADE,
    role_name    name NOT NULL,
    access       text NOT NULL CHECK (access IN ('viewer', 'contributor', 'owner')),
    granted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace_id, role_name)
);
CREATE INDEX namespace_members_role ON reghook.namespace_members (role_name);
COMMENT ON TABLE reghook.namespace_members IS
    'Who may see and manage a namespace: PostgreSQL login roles and their access.';
COMMENT ON COLUMN reghook.namespace_members.namespace_id IS 'The namespace.';
COMMENT ON COLUMN reghook.namespace_members.role_name IS 'A PostgreSQL role (login role or group) granted access.';
COMMENT ON COLUMN reghook.namespace_members.access IS
    'viewer reads webhooks and history; contributor also manages webhooks and retriggers; owner also manages members.';
COMMENT ON COLUMN reghook.namespace_members.granted_at IS 'When the access was last granted.';

CREATE TABLE reghook.registry_sources (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    namespaces   text[],
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE reghook.registry_sources IS
    'Registries allowed to post events, each with its own bearer token.';
COMMENT ON COLUMN reghook.registry_sources.name IS 'A label for the registry.';
COMMENT ON COLUMN reghook.registry_sources.token_sha256 IS
    'SHA-256 of the bearer token; the token itself is shown once, at creation, and never stored.';
COMMENT ON COLUMN reghook.registry_sources.namespaces IS
    'Namespaces this registry may post events for; NULL means all. Events for others are rejected.';
COMMENT ON COLUMN reghook.registry_sources.created_at IS 'When the source was created.';

CREATE TABLE reghook.events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id    bigint NOT NULL REFERENCES reghook.registry_sources ON DELETE CASCADE,
    event_uuid   text NOT NULL,
    namespace_id bigint NOT NULL REFERENCES reghook.namespaces ON DELETE CASCADE,
    repository   text NOT NULL,
    name         text NOT NULL,
    action       text NOT NULL CHECK (action IN ('push', 'delete')),
    tag          text,
    digest       text,
    media_type   text,
    request_id   text,
    actor        text NOT NULL DEFAULT '',
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    raw          jsonb NOT NULL,
    UNIQUE (source_id, event_uuid)
);
CREATE INDEX events_delete_request ON reghook.events (source_id, request_id)
    WHERE action = 'delete' AND request_id IS NOT NULL;
CREATE INDEX events_namespace_time ON reghook.events (namespace_id, received_at);
COMMENT ON TABLE reghook.events IS
    'Registry events kept: pushes of manifests (tagged or not) and deletes, of registered namespaces. Deduplicated by (source_id, event_uuid).';
COMMENT ON COLUMN reghook.events.source_id IS 'The registry source that posted the event.';
COMMENT ON COLUMN reghook.events.event_uuid IS 'The event id the registry gave; a repeat of it is a duplicate.';
COMMENT ON COLUMN reghook.events.namespace_id IS 'The namespace the repository was routed to.';
COMMENT ON COLUMN reghook.events.repository IS 'Full repository path, e.g. team-a/sub/app.';
COMMENT ON COLUMN reghook.events.name IS 'Repository path below the namespace, e.g. app.';
COMMENT ON COLUMN reghook.events.action IS 'push or delete.';
COMMENT ON COLUMN reghook.events.tag IS 'Tag pushed or deleted; NULL for an untagged manifest push or a delete by digest.';
COMMENT ON COLUMN reghook.events.digest IS
    'Manifest digest; for a tag delete, the digest of the delete-by-digest request it came from.';
COMMENT ON COLUMN reghook.events.media_type IS 'Media type of the manifest, as the registry reported it.';
COMMENT ON COLUMN reghook.events.request_id IS 'The registry request id; links a delete by digest with its per-tag deletes.';
COMMENT ON COLUMN reghook.events.actor IS 'The registry user who acted, or empty.';
COMMENT ON COLUMN reghook.events.occurred_at IS 'Event timestamp given by the registry.';
COMMENT ON COLUMN reghook.events.received_at IS 'When reghook stored the event.';
COMMENT ON COLUMN reghook.events.raw IS 'The event exactly as the registry sent it (forwarded by webhooks of format registry).';

CREATE TABLE reghook.webhooks (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id    bigint NOT NULL REFERENCES reghook.namespaces ON DELETE CASCADE,
    name            text NOT NULL,
    url             text NOT NULL CHECK (url ~ '^https?://[^/?#]+'),
    method          text NOT NULL DEFAULT 'POST' CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
    content_type    text NOT NULL DEFAULT 'application/json' CHECK (content_type !~ '[\r\n]'),
    username        text CHECK (username !~ '[\r\n:]'),
    actions         text[] NOT NULL DEFAULT '{push}'
        CHECK (actions <@ ARRAY['push', 'delete'] AND cardinality(actions) > 0),
    repository_glob text NOT NULL DEFAULT '*',
    tag_glob        text NOT NULL DEFAULT '*',
    format          text NOT NULL DEFAULT 'dockerhub' CHECK (format IN ('dockerhub', 'registry')),
    enabled         boolean NOT NULL DEFAULT false,
    disabled_reason text,
    timeout_ms      integer CHECK (timeout_ms BETWEEN 1 AND 86400000),
    max_attempts    integer CHECK (max_attempts BETWEEN 1 AND 100),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_success_at timestamptz,
    last_failure_at timestamptz,
    failures_in_a_row integer NOT NULL DEFAULT 0,
    failing_since   timestamptz
);
CREATE INDEX webhooks_namespace ON reghook.webhooks (namespace_id) WHERE enabled;
COMMENT ON TABLE reghook.webhooks IS 'Endpoints that a namespace''s events are delivered to.';
COMMENT ON COLUMN reghook.webhooks.namespace_id IS 'The namespace whose events the webhook receives.';
COMMENT ON COLUMN reghook.webhooks.name IS 'A label shown in lists and history; defaults to the URL''s host.';
COMMENT ON COLUMN reghook.webhooks.url IS
    'Target URL; {namespace} {name} {repository} {tag} {digest} {action} are expanded, percent-encoded.';
COMMENT ON COLUMN reghook.webhooks.method IS 'HTTP method; GET and DELETE send no body.';
COMMENT ON COLUMN reghook.webhooks.content_type IS 'Content-Type of the request body.';
COMMENT ON COLUMN reghook.webhooks.username IS 'HTTP basic auth user; the password is in webhook_secrets.';
COMMENT ON COLUMN reghook.webhooks.actions IS 'Which event actions are delivered: push, delete.';
COMMENT ON COLUMN reghook.webhooks.repository_glob IS 'Glob (* and ?) on the repository name below the namespace.';
COMMENT ON COLUMN reghook.webhooks.tag_glob IS 'Glob (* and ?) on the tag; * also matches events without a tag.';
COMMENT ON COLUMN reghook.webhooks.format IS 'dockerhub payload, or registry: the original event as received.';
COMMENT ON COLUMN reghook.webhooks.enabled IS 'Only enabled webhooks get deliveries; a new webhook starts disabled.';
COMMENT ON COLUMN reghook.webhooks.disabled_reason IS 'Why reghook disabled the webhook (410 Gone, days of failures), if it did.';
COMMENT ON COLUMN reghook.webhooks.timeout_ms IS 'Request timeout override, milliseconds; NULL uses request_timeout.';
COMMENT ON COLUMN reghook.webhooks.max_attempts IS 'Attempts override; NULL uses max_attempts.';
COMMENT ON COLUMN reghook.webhooks.created_at IS 'When the webhook was added.';
COMMENT ON COLUMN reghook.webhooks.updated_at IS 'When the webhook was last changed.';
COMMENT ON COLUMN reghook.webhooks.last_success_at IS 'Time of the last 2xx answer.';
COMMENT ON COLUMN reghook.webhooks.last_failure_at IS 'Time of the last failed attempt.';
COMMENT ON COLUMN reghook.webhooks.failures_in_a_row IS 'Failed attempts since the last success.';
COMMENT ON COLUMN reghook.webhooks.failing_since IS
    'Time of the first failure since the last success; after 5 days of failures the webhook is disabled.';

CREATE TABLE reghook.webhook_secrets (
    webhook_id bigint PRIMARY KEY REFERENCES reghook.webhooks ON DELETE CASCADE,
    password   text,
    secret     text CHECK (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$')
);
COMMENT ON TABLE reghook.webhook_secrets IS
    'Write-only secrets of webhooks: readable by the dispatcher and reghook_admin only.';
COMMENT ON COLUMN reghook.webhook_secrets.password IS 'HTTP basic auth password.';
COMMENT ON COLUMN reghook.webhook_secrets.secret IS 'Standard Webhooks signing key, whsec_ + base64.';

CREATE TABLE reghook.webhook_headers (
    webhook_id bigint NOT NULL REFERENCES reghook.webhooks ON DELETE CASCADE,
    position   integer NOT NULL,
    name       text NOT NULL CHECK (name ~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]+$'),
    value      text NOT NULL CHECK (value !~ '[\r\n\x00]'),
    PRIMARY KEY (webhook_id, position)
);
COMMENT ON TABLE reghook.webhook_headers IS 'Extra request headers of a webhook, sent in position order.';
COMMENT ON COLUMN reghook.webhook_headers.position IS 'Order in which the header is sent.';
COMMENT ON COLUMN reghook.webhook_headers.name IS 'Header name (an HTTP token).';
COMMENT ON COLUMN reghook.webhook_headers.value IS 'Header value (no line breaks).';

CREATE TABLE reghook.deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id      bigint NOT NULL REFERENCES reghook.webhooks ON DELETE CASCADE,
    event_id        bigint REFERENCES reghook.events ON DELETE CASCADE,
    action          text NOT NULL CHECK (action IN ('push', 'delete')),
    is_test         boolean NOT NULL DEFAULT false,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'in_flight', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_expires_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    last_error      text,
    callback_token  text NOT NULL UNIQUE
        DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
    callback_state  text CHECK (callback_state IN ('success', 'failure', 'error')),
    callback_description text,
    callback_context text,
    callback_target_url text,
    callback_at     timestamptz
);
CREATE INDEX deliveries_due ON reghook.deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_lease ON reghook.deliveries (lease_expires_at) WHERE status = 'in_flight';
CREATE INDEX deliveries_webhook ON reghook.deliveries (webhook_id, created_at);
CREATE INDEX deliveries_event ON reghook.deliveries (event_id);
COMMENT ON TABLE reghook.deliveries IS 'One event owed to one webhook (or a test push), with its state.';
COMMENT ON COLUMN reghook.deliveries.id IS 'Sent as X-Reghook-Delivery, the same on every attempt.';
COMMENT ON COLUMN reghook.deliveries.webhook_id IS 'The webhook delivered to.';
COMMENT ON COLUMN reghook.deliveries.event_id IS 'The event delivered; NULL for a test push.';
COMMENT ON COLUMN reghook.deliveries.action IS 'push or delete (X-Reghook-Event).';
COMMENT ON COLUMN reghook.deliveries.is_test IS 'A test push made by test_webhook().';
COMMENT ON COLUMN reghook.deliveries.status IS
    'pending (waiting for next_attempt_at), in_flight (leased by a dispatcher), succeeded, failed (attempts exhausted).';
COMMENT ON COLUMN reghook.deliveries.attempts IS 'Attempts made so far.';
COMMENT ON COLUMN reghook.deliveries.next_attempt_at IS 'When the next attempt is due (pending only).';
COMMENT ON COLUMN reghook.deliveries.lease_owner IS 'The dispatcher instance holding the delivery while in_flight.';
COMMENT ON COLUMN reghook.deliveries.lease_expires_at IS 'After this, another dispatcher may take the delivery.';
COMMENT ON COLUMN reghook.deliveries.created_at IS 'When the delivery was created.';
COMMENT ON COLUMN reghook.deliveries.completed_at IS 'When it succeeded or was failed.';
COMMENT ON COLUMN reghook.deliveries.last_error IS 'Summary of the last failed attempt.';
COMMENT ON COLUMN reghook.deliveries.callback_token IS 'Secret part of callback_url; names this delivery to POST /callback.';
COMMENT ON COLUMN reghook.deliveries.callback_state IS 'state the endpoint reported through callback_url.';
COMMENT ON COLUMN reghook.deliveries.callback_description IS 'description the endpoint reported through callback_url.';
COMMENT ON COLUMN reghook.deliveries.callback_context IS 'context the endpoint reported through callback_url.';
COMMENT ON COLUMN reghook.deliveries.callback_target_url IS 'target_url the endpoint reported through callback_url.';
COMMENT ON COLUMN reghook.deliveries.callback_at IS 'When the callback arrived.';

CREATE TABLE reghook.delivery_attempts (
    delivery_id      uuid NOT NULL REFERENCES reghook.deliveries ON DELETE CASCADE,
    attempt          integer NOT NULL,
    webhook_id       bigint NOT NULL,
    attempted_at     timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    method           text NOT NULL,
    url              text NOT NULL,
    request_headers  jsonb NOT NULL,
    request_body     text,
    response_status  integer,
    response_headers jsonb,
    response_body    bytea,
    response_truncated boolean NOT NULL DEFAULT false,
    error_class      text CHECK (error_class IN ('dns', 'connect', 'tls', 'timeout', 'blocked', 'http', 'other')),
    error_message    text,
    instance         text NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX delivery_attempts_webhook_time ON reghook.delivery_attempts (webhook_id, attempted_at DESC);
CREATE INDEX delivery_attempts_time ON reghook.delivery_attempts (attempted_at);
COMMENT ON TABLE reghook.delivery_attempts IS 'Every try at a delivery, as sent and as answered.';
COMMENT ON COLUMN reghook.delivery_attempts.attempt IS 'Attempt number, from 1; continues after a retrigger.';
COMMENT ON COLUMN reghook.delivery_attempts.webhook_id IS 'The webhook (copied from the delivery, for fast history per webhook).';
COMMENT ON COLUMN reghook.delivery_attempts.attempted_at IS 'When the request started.';
COMMENT ON COLUMN reghook.delivery_attempts.duration_ms IS 'From start to the last byte of the answer, or to the failure.';
COMMENT ON COLUMN reghook.delivery_attempts.method IS 'HTTP method sent.';
COMMENT ON COLUMN reghook.delivery_attempts.url IS 'URL requested, without credentials.';
COMMENT ON COLUMN reghook.delivery_attempts.request_headers IS
    'Headers sent, as [[name, value], ...]; Authorization and signatures redacted.';
COMMENT ON COLUMN reghook.delivery_attempts.request_body IS 'Body sent, if any.';
COMMENT ON COLUMN reghook.delivery_attempts.response_status IS 'HTTP status answered; NULL on a transport failure.';
COMMENT ON COLUMN reghook.delivery_attempts.response_headers IS 'Headers answered, as [[name, value], ...].';
COMMENT ON COLUMN reghook.delivery_attempts.response_body IS 'The first response_body_limit bytes of the answer.';
COMMENT ON COLUMN reghook.delivery_attempts.response_truncated IS 'The answer was longer than response_body_limit.';
COMMENT ON COLUMN reghook.delivery_attempts.error_class IS
    'For a failure: dns, connect, tls, timeout, blocked (refused target), http (non-2xx or redirect), other.';
COMMENT ON COLUMN reghook.delivery_attempts.error_message IS 'What went wrong, for a person.';
COMMENT ON COLUMN reghook.delivery_attempts.instance IS 'The dispatcher instance that made the attempt.';

COMMENT ON COLUMN reghook.namespaces.id IS 'Identifier.';
COMMENT ON COLUMN reghook.registry_sources.id IS 'Identifier.';
COMMENT ON COLUMN reghook.events.id IS 'Identifier, in order of storage.';
COMMENT ON COLUMN reghook.webhooks.id IS 'Identifier, used by the webhook commands and functions.';
COMMENT ON COLUMN reghook.webhook_secrets.webhook_id IS 'The webhook.';
COMMENT ON COLUMN reghook.webhook_headers.webhook_id IS 'The webhook.';
COMMENT ON COLUMN reghook.delivery_attempts.delivery_id IS 'The delivery tried.';
