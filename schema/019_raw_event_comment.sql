-- 019_raw_event_comment: events.raw is the registry's event re-serialised
-- as jsonb (the same members and values; keys in jsonb's order, its own
-- spacing and numbers), not its bytes: its comment said otherwise.
COMMENT ON COLUMN reghook.events.raw IS
    'The event as the registry sent it, one event of its envelope, as jsonb (forwarded by webhooks of format registry).';
