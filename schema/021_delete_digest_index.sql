-- 021_delete_digest_index: a tag delete takes its digest from the
-- delete-by-digest of the same request, source and repository
-- (schema/functions/ingest.sql). 001's index held every delete with a
-- request id, so each tag delete of a request that had no digest event
-- read all those stored before it: a token posting thousands of tag
-- deletes with one request id made every ingest slower than the last.
-- Only deletes that carry a digest are indexed now, by repository too,
-- in the order they were stored.
DROP INDEX IF EXISTS reghook.events_delete_request;
CREATE INDEX events_delete_digest ON reghook.events (source_id, request_id, repository, id)
    WHERE action = 'delete' AND digest IS NOT NULL;
COMMENT ON INDEX reghook.events_delete_digest IS
    'Deletes that carry a digest, by source, request id and repository: the digest of a tag delete.';
