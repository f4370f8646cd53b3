-- 004_webhooks: managing webhooks with SQL. The functions it made
-- (webhook_add, webhook_set, ...) live in schema/functions/webhooks.sql now.

ALTER TABLE reghook.webhooks ADD CONSTRAINT webhook_url_template
    CHECK (regexp_replace(url, '\{(namespace|name|repository|tag|digest|action)\}', '', 'g') !~ '[{}]');
