-- 011_functions_in_files: functions, views, policies and grants live in
-- schema/functions/, one file per behaviour, which reghook migrate applies
-- after the numbered migrations, in the same transaction, whenever one of
-- them changed; schema_functions records what it applied.
--
-- The checked management functions of 006 called the bodies of 003 and
-- 004, renamed *_unchecked; each is one function now (webhooks.sql), and
-- a database made before loses the old bodies.

CREATE TABLE reghook.schema_functions (
    file       text PRIMARY KEY,
    sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE reghook.schema_functions IS
    'The files of schema/functions/ applied to this database, with their SHA-256: reghook migrate applies them all '
    'again when one of them differs from the files it carries.';
COMMENT ON COLUMN reghook.schema_functions.file IS 'Name of the file in schema/functions/, e.g. queue.sql.';
COMMENT ON COLUMN reghook.schema_functions.sha256 IS 'SHA-256 of its text, in hex.';
COMMENT ON COLUMN reghook.schema_functions.applied_at IS 'When it was last applied.';

DROP FUNCTION IF EXISTS reghook.webhook_set_headers_unchecked(bigint, text[]),
    reghook.webhook_set_unchecked(bigint, jsonb), reghook.webhook_enable_unchecked(bigint),
    reghook.webhook_disable_unchecked(bigint, text), reghook.webhook_remove_unchecked(bigint),
    reghook.test_webhook_unchecked(bigint);
