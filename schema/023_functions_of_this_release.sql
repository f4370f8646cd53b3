-- 023_functions_of_this_release: schema/functions/ changed after 022
-- (webhook_set_headers() quotes a refused header's name, never its value,
-- which may be a token). An instance of a build that knows 022 but not
-- 023 then leaves these functions alone (migrate.c: a release that changes
-- schema/functions/ adds a migration).
SELECT 1;
