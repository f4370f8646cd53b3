-- 017_time_ordered_ids: a new delivery's id is a version 7 UUID (RFC 9562:
-- the milliseconds of its making, then random bits), and its callback token
-- starts with another, so that new rows go next to each other in the
-- indexes on them (the primary keys of deliveries and delivery_attempts,
-- the token's unique index) instead of to a random page of each. With a
-- long history those indexes outgrow memory, and each insert touched a
-- random page of each: a read when it was not cached and, after each
-- checkpoint, the whole page written to the WAL (README, Benchmarks: the
-- history benchmark's ingest). Existing rows keep their ids. The two
-- functions belong to the table, as its defaults do; ingest() calls them
-- too, to know a new delivery's id and token before its row is inserted.
-- SQL-standard bodies: their names are bound when they are made, so no
-- search_path can change them, and the planner inlines them (a SET clause
-- would keep it from doing so, and double their cost).
CREATE FUNCTION reghook.new_delivery_id() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
BEGIN ATOMIC
    -- A version 4 UUID's random bits, its first 48 the time in ms, version 7.
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
               PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                 FROM 3)
               FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid;
END;
COMMENT ON FUNCTION reghook.new_delivery_id() IS
    'A new delivery''s id: a version 7 UUID, ordered by the time it was made.';

-- 64 hex digits as before: a version 7 UUID's 32 (74 random bits) and a
-- version 4 UUID's 32 (122 random bits).
CREATE FUNCTION reghook.new_callback_token() RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE
BEGIN ATOMIC
    SELECT replace(reghook.new_delivery_id()::text || gen_random_uuid()::text, '-', '');
END;
COMMENT ON FUNCTION reghook.new_callback_token() IS
    'A new delivery''s callback token: 64 hex digits, 196 of their bits random, ordered by time.';

ALTER TABLE reghook.deliveries ALTER COLUMN id SET DEFAULT reghook.new_delivery_id();
ALTER TABLE reghook.deliveries ALTER COLUMN callback_token SET DEFAULT reghook.new_callback_token();
