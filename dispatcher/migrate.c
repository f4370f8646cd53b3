/*
 * migrate: see migrate.h. A run is a chain of queries on one connection:
 * lock, bootstrap the bookkeeping table, read what is applied, apply each
 * missing migration, unlock. Any failure unlocks (or loses the session,
 * which unlocks too) and reports. The run's queries have no deadline: the
 * lock may be held for long by another instance migrating, and a migration
 * may rewrite a large table.
 */
#include "migrate.h"
#include "buf.h"
#include "log.h"
#include "schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NMIGRATIONS ((int)(sizeof(migration_srcs) / sizeof(migration_srcs[0])))
/* Arbitrary, fixed: the key of the advisory lock that serialises migrations. */
#define MIGRATE_LOCK_KEY "7165716866"

enum migrate_step {
	MIGRATE_LOCKING,   /* waiting for the advisory lock */
	MIGRATE_BOOTSTRAP, /* creating the schema and the bookkeeping table */
	MIGRATE_READING,   /* reading the applied versions */
	MIGRATE_APPLYING,  /* running migration `next` */
	MIGRATE_ROLLBACK,  /* a migration failed: ending its transaction before unlocking */
	MIGRATE_UNLOCKING, /* releasing the lock; then done */
};

struct migrate {
	struct pgc *c;	/* borrowed */
	int timeout_ms; /* the connection's query deadline, given back at the end */
	enum migrate_step step;
	migrate_done_fn done;
	void *arg;
	bool applied_v[NMIGRATIONS];
	int next;
	int applied;
	char *error; /* owned; the first failure */
};

/* Every migration up to $1 applied: as many as this binary carries (numbers may skip). */
const char migrate_current_sql[] =
	"SELECT coalesce((SELECT count(*) FROM reghook.schema_migrations WHERE version <= "
	"$1::int), 0) = " MIGRATION_COUNT;

static void on_result(struct pgc *c, PGresult *res, void *arg);

int migrate_latest_version(void)
{
	return migration_srcs[NMIGRATIONS - 1].version;
}

static void finish(struct migrate *m)
{
	pgc_set_query_timeout(m->c, m->timeout_ms);
	m->done(m->error == NULL, m->error, m->applied, m->arg);
	free(m->error);
	free(m);
}

static void set_error(struct migrate *m, const char *what, PGresult *res)
{
	struct buf b = BUF_INIT;
	buf_printf(&b, "%s: %s", what, pgc_error(res));
	if (!m->error)
		m->error = buf_steal(&b);
	buf_free(&b);
}

static void fail(struct pgc *c, struct migrate *m, const char *what, PGresult *res)
{
	set_error(m, what, res);
	if (!res) {
		finish(m); /* the session is gone, and with it the lock */
		return;
	}
	m->step = MIGRATE_UNLOCKING;
	pgc_query(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0, NULL, on_result, m);
}

static void apply_next(struct pgc *c, struct migrate *m)
{
	while (m->next < NMIGRATIONS && m->applied_v[m->next])
		m->next++;
	if (m->next >= NMIGRATIONS) {
		m->step = MIGRATE_UNLOCKING;
		pgc_query(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0, NULL, on_result,
			  m);
		return;
	}
	const struct migration_src *src = &migration_srcs[m->next];
	struct buf sql = BUF_INIT;
	log_info("applying migration %03d_%s", src->version, src->name);
	buf_printf(&sql,
		   "BEGIN;\nSET LOCAL search_path = reghook, pg_catalog;\n%s\n;"
		   /* Whatever a migration forgets, PUBLIC calls no function of the
		    * schema: default privileges per schema cannot take EXECUTE away
		    * from PUBLIC, so it is taken here, in the same transaction. */
		   "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reghook FROM PUBLIC;\n"
		   "INSERT INTO reghook.schema_migrations (version, name) VALUES (%d, '%s');\n"
		   "COMMIT;",
		   src->sql, src->version, src->name);
	m->step = MIGRATE_APPLYING;
	pgc_query(c, sql.data, 0, NULL, on_result, m);
	buf_free(&sql);
}

static void on_result(struct pgc *c, PGresult *res, void *arg)
{
	struct migrate *m = arg;

	switch (m->step) {
	case MIGRATE_LOCKING:
		if (!pgc_ok(res))
			return fail(c, m, "taking the migration lock", res);
		m->step = MIGRATE_BOOTSTRAP;
		pgc_query(c,
			  /* Only when missing: a role that may not create (the
			   * dispatcher's) can still find the schema current. */
			  "DO $bootstrap$ BEGIN"
			  " IF to_regclass('reghook.schema_migrations') IS NULL THEN"
			  " CREATE SCHEMA IF NOT EXISTS reghook;"
			  " CREATE TABLE reghook.schema_migrations ("
			  " version integer PRIMARY KEY, name text NOT NULL,"
			  " applied_at timestamptz NOT NULL DEFAULT now());"
			  " COMMENT ON TABLE reghook.schema_migrations IS "
			  "'Migrations of schema/ applied to this database, by version.';"
			  " COMMENT ON COLUMN reghook.schema_migrations.version IS "
			  "'Number of the migration (its file name''s prefix).';"
			  " COMMENT ON COLUMN reghook.schema_migrations.name IS "
			  "'Name of the migration (its file name''s rest).';"
			  " COMMENT ON COLUMN reghook.schema_migrations.applied_at IS "
			  "'When it was applied.';"
			  " END IF; END $bootstrap$",
			  0, NULL, on_result, m);
		break;
	case MIGRATE_BOOTSTRAP:
		if (!pgc_ok(res))
			return fail(c, m, "creating schema reghook", res);
		m->step = MIGRATE_READING;
		pgc_query(c, "SELECT version FROM reghook.schema_migrations", 0, NULL, on_result,
			  m);
		break;
	case MIGRATE_READING:
		if (!pgc_ok(res))
			return fail(c, m, "reading applied migrations", res);
		for (int i = 0; i < PQntuples(res); i++) {
			int v = atoi(PQgetvalue(res, i, 0));
			for (int j = 0; j < NMIGRATIONS; j++)
				if (migration_srcs[j].version == v)
					m->applied_v[j] = true;
		}
		apply_next(c, m);
		break;
	case MIGRATE_APPLYING:
		if (!pgc_ok(res)) {
			char what[128];
			snprintf(what, sizeof(what), "migration %03d_%s",
				 migration_srcs[m->next].version, migration_srcs[m->next].name);
			if (!res)
				return fail(c, m, what, res);
			/* The failed transaction must end before the lock is released. */
			set_error(m, what, res);
			m->step = MIGRATE_ROLLBACK;
			pgc_query(c, "ROLLBACK", 0, NULL, on_result, m);
			return;
		}
		m->applied++;
		m->next++;
		apply_next(c, m);
		break;
	case MIGRATE_ROLLBACK:
		if (!res) {
			/* The connection went, and the lock with its session. */
			finish(m);
			break;
		}
		m->step = MIGRATE_UNLOCKING;
		pgc_query(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0, NULL, on_result,
			  m);
		break;
	case MIGRATE_UNLOCKING:
		finish(m);
		break;
	}
}

void migrate_run(struct pgc *c, migrate_done_fn done, void *arg)
{
	struct migrate *m = xcalloc(1, sizeof(*m));
	m->done = done;
	m->arg = arg;
	m->c = c;
	m->timeout_ms = pgc_query_timeout(c);
	pgc_set_query_timeout(c, 0);
	m->step = MIGRATE_LOCKING;
	pgc_query(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, on_result, m);
}
