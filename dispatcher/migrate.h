/*
 * migrate: applies the SQL migrations of schema/ (compiled into the binary)
 * over an asynchronous connection. Each migration runs in its own
 * transaction and is recorded in reghook.schema_migrations; a session
 * advisory lock makes concurrent runs (several daemons starting together)
 * apply each migration exactly once.
 */
#ifndef REGHOOK_MIGRATE_H
#define REGHOOK_MIGRATE_H

#include "pgc.h"

#include <stdbool.h>

/* ok false: error says why (borrowed for the call). applied: migrations run now. */
typedef void (*migrate_done_fn)(bool ok, const char *error, int applied, void *arg);

void migrate_run(struct pgc *c, migrate_done_fn done, void *arg);
/* The highest migration version this binary carries. */
int migrate_latest_version(void);
/* SQL returning one row, one column: true when the schema is current. */
extern const char migrate_current_sql[];

#endif
