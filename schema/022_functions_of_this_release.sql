-- 022_functions_of_this_release: schema/functions/ changed after 021
-- (the webhook health of complete_deliveries(), the claim of a disabled
-- webhook's test push and of a resting webhook's probe, registry_rotate(),
-- the digest look-up of ingest()). An instance of a build that knows 021
-- but not 022 then finds the database newer than itself and leaves these
-- functions alone, instead of writing its own back over them at each
-- connection (migrate.c: a release that changes schema/functions/ adds a
-- migration).
SELECT 1;
