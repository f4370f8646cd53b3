/*
 * migrate: brings schema reghook current over an asynchronous connection,
 * from the SQL of schema/ compiled into the binary: the numbered
 * migrations not yet applied (tables, columns, indexes, data; recorded in
 * reghook.schema_migrations), then, when one of them changed or a numbered
 * migration ran, every file of schema/functions/ in its fixed order
 * (functions, views, triggers, policies, grants; recorded with their
 * SHA-256 in reghook.schema_functions). All of it is one transaction, so a
 * failure leaves the database as it was; a lock on schema_migrations
 * makes concurrent runs (several daemons starting together) apply each
 * migration exactly once, the later ones finding nothing to do.
 */
#ifndef REGHOOK_MIGRATE_H
#define REGHOOK_MIGRATE_H

#include "pgc.h"

#include <stdbool.h>

/* ok false: error says why (borrowed for the call). applied: numbered migrations run now. */
typedef void (*migrate_done_fn)(bool ok, const char *error, int applied, void *arg);

struct migrate;

/*
 * Starts a run on c; done is called once, when it ends. The run is freed
 * after done returns; one whose connection was freed before it ended (a
 * stop while a migration waits on a lock) never calls done, and its owner
 * frees it with migrate_abandon().
 */
struct migrate *migrate_run(struct pgc *c, migrate_done_fn done, void *arg);
/* Frees a run whose connection is gone without it ending; NULL: nothing. */
void migrate_abandon(struct migrate *m);
/* The highest migration version this binary carries. */
int migrate_latest_version(void);
/* SQL returning one row, one column: true when the schema is current. */
extern const char migrate_current_sql[];

#endif
