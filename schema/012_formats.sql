-- 012_formats: the payload formats beyond dockerhub and registry (SPEC
-- "Other formats"): CloudEvents in both modes, chat messages and the
-- webhook's own JSON template; and the format each attempt was sent in.

ALTER TABLE reghook.webhooks DROP CONSTRAINT IF EXISTS webhooks_format_check;
ALTER TABLE reghook.webhooks ADD CONSTRAINT webhooks_format_check
    CHECK (format IN ('dockerhub', 'registry', 'cloudevents', 'cloudevents-structured',
                      'slack', 'discord', 'teams', 'template'));
COMMENT ON COLUMN reghook.webhooks.format IS
    'The payload format: dockerhub, registry (the event as received), cloudevents, cloudevents-structured, '
    'slack, discord, teams, or template (the webhook''s template).';

ALTER TABLE reghook.webhooks ADD COLUMN template text
    CONSTRAINT webhook_template_size CHECK (octet_length(template) <= 16384);
ALTER TABLE reghook.webhooks ADD CONSTRAINT webhook_template_needed
    CHECK (format <> 'template' OR template IS NOT NULL);
COMMENT ON COLUMN reghook.webhooks.template IS
    'For format template: a JSON document whose strings may hold {{variable}}s, rendered per delivery '
    '(checked by webhook_set(); reghook checks it again when it renders).';

ALTER TABLE reghook.delivery_attempts ADD COLUMN format text;
COMMENT ON COLUMN reghook.delivery_attempts.format IS
    'The payload format the attempt was sent in; NULL for an attempt made before 012 or lost with its dispatcher.';

-- claim_deliveries (schema/functions/queue.sql) returns more columns now.
DROP FUNCTION IF EXISTS reghook.claim_deliveries(text, integer, integer, jsonb, integer);
