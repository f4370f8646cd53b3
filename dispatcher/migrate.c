/*
 * migrate: see migrate.h.
 *
 * DESIGN. A run is a chain of queries on one connection, one step each, in
 * one transaction: create the schema and schema_migrations if missing, lock
 * schema_migrations against other runs, read the applied versions, apply
 * each missing numbered migration, compare the files of schema/functions/
 * with what schema_functions says was applied, apply them all in their
 * order when anything differs or a numbered migration ran, record them,
 * commit. Any failure rolls the transaction back (or loses the session,
 * which does too): the database is left as it was. A second run finds
 * nothing to do and changes nothing: it reads and commits an empty
 * transaction. Run by the schema's owner, it also asks whether the group
 * roles lost what the files give them (a database restored or renamed:
 * access.sql), and applies the files again if so.
 *
 * The lock is SHARE ROW EXCLUSIVE on schema_migrations, taken by a role
 * that may write the table (the owner's, an admin's): it waits for
 * another run, and nothing a member may do holds it up (members may only
 * read the table, and a reader's lock does not conflict); an advisory
 * lock, any role that may connect can take and keep, and every start would
 * wait for it. A role that may not write the table (the
 * dispatcher's) takes no lock: it can only find the schema current. The
 * run's queries have no deadline (db_timeout): another run may hold the
 * lock for long, and a migration may rewrite a large table. But each
 * waits at most MIGRATE_LOCK_TIMEOUT for a lock on the tables it changes:
 * one a person holds (an open transaction that read the webhooks) fails
 * the run, which is tried again later, instead of queueing every other
 * statement on that table behind the migration's request, for all
 * namespaces, until the person is done.
 *
 * The files of schema/functions/ define with CREATE OR REPLACE and grant
 * from a clean slate (authz.sql), so applying them again is harmless, and
 * they are applied only when they changed, so that an unchanged database
 * takes no lock on its tables. A binary older than the database (it lacks
 * migrations the database has) leaves the functions of the newer one in
 * place: the numbered migrations are what orders two binaries, so a
 * release that changes schema/functions/ also adds one (an empty one will
 * do).
 */
#include "migrate.h"
#include "buf.h"
#include "log.h"
#include "schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NMIGRATIONS ((int)(sizeof(migration_srcs) / sizeof(migration_srcs[0])))
#define NFUNCTIONS ((int)(sizeof(function_srcs) / sizeof(function_srcs[0])))
#define MIGRATE_LOCK_TIMEOUT "2s"
/* Every query of the transaction resolves names in reghook first. */
#define MIGRATE_SEARCH_PATH "SET LOCAL search_path = reghook, pg_catalog;\n"

/*
 * Before the files of schema/functions/ are applied, every table of the
 * schema is locked (not the bookkeeping tables, which members may read and
 * the files do not touch): applied one by one, they took a lock on one
 * table (a trigger on deliveries) early and asked for one on another (a
 * policy on namespaces) late, while every ingest() holds the second and
 * waits for the first: under a steady stream of events each run
 * deadlocked, so an upgrade of several instances never got through.
 * Locking them first in one order deadlocked as well (the daemon's
 * statements take theirs in other orders), so each try takes them all
 * without waiting (NOWAIT) and, if one is held, lets go of all and tries
 * again a few milliseconds later: the run never waits while it holds a
 * table, so no cycle can form, and the statements it holds up wait only
 * while it applies the files. For MIGRATE_LOCK_TIMEOUT, as any other lock
 * of the run; then the run fails and is tried again later.
 */
#define FUNCTIONS_LOCK                                                                             \
	"DO $lock$ DECLARE t regclass; "                                                           \
	"until timestamptz := pg_catalog.clock_timestamp() + '" MIGRATE_LOCK_TIMEOUT "'; "         \
	"BEGIN LOOP BEGIN "                                                                        \
	"FOR t IN SELECT c.oid::regclass FROM pg_catalog.pg_class c "                              \
	"WHERE c.relnamespace = 'reghook'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p') "   \
	"AND c.relname NOT IN ('schema_migrations', 'schema_functions') "                          \
	"ORDER BY c.relname COLLATE \"C\" LOOP "                                                   \
	"EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', t); "          \
	"END LOOP; RETURN; "                                                                       \
	"EXCEPTION WHEN lock_not_available THEN "                                                  \
	"IF pg_catalog.clock_timestamp() > until THEN "                                            \
	"RAISE EXCEPTION 'lock timeout: a table of schema reghook stayed locked by another "       \
	"transaction for " MIGRATE_LOCK_TIMEOUT "' USING ERRCODE = 'lock_not_available'; END IF; " \
	"PERFORM pg_catalog.pg_sleep(0.005 + pg_catalog.random() * 0.01); "                        \
	"END; END LOOP; END $lock$"

enum migrate_step {
	MIGRATE_BOOTSTRAP,     /* BEGIN; creating the schema and the bookkeeping table; the lock */
	MIGRATE_READING,       /* reading the applied versions */
	MIGRATE_LOCKING_FIRST, /* some are missing: locking the schema's tables (FUNCTIONS_LOCK) */
	MIGRATE_APPLYING,      /* running migration `next` */
	MIGRATE_COMPARING,     /* asking whether schema/functions/ changed */
	MIGRATE_CARING,	       /* they did not: asking whether the group roles need them again */
	MIGRATE_LOCKING,       /* they did: locking the schema's tables (FUNCTIONS_LOCK) */
	MIGRATE_FUNCTIONS,     /* running function file `next` */
	MIGRATE_RECORDING,     /* recording the function files applied */
	MIGRATE_COMMITTING,
	MIGRATE_ROLLBACK, /* something failed: ending the transaction; then done */
	MIGRATE_RESTART,  /* a lock cycle: ending the transaction, to begin again locked first */
};

struct migrate {
	struct pgc *c;	/* borrowed */
	int timeout_ms; /* the connection's query deadline, given back at the end */
	enum migrate_step step;
	migrate_done_fn done;
	void *arg;
	bool applied_v[NMIGRATIONS];
	bool db_newer;		/* the database has a migration above the latest here */
	bool applied_v_missing; /* a numbered migration is to be applied */
	bool lock_first;	/* this try takes FUNCTIONS_LOCK before the numbered migrations */
	bool locked;		/* FUNCTIONS_LOCK taken */
	int next;
	int applied;
	char *error; /* owned; the first failure */
};

/* Every migration up to $1 applied: as many as this binary carries (numbers may skip). */
const char migrate_current_sql[] =
	"SELECT coalesce((SELECT count(*) FROM reghook.schema_migrations WHERE version <= "
	"$1::int), 0) = " MIGRATION_COUNT;

static void on_result(struct pgc *c, PGresult *res, void *arg);

/*
 * The run's first query: its transaction, the schema and schema_migrations
 * (only when missing: a role that may not create, the dispatcher's, can
 * still find the schema current; two runs on a new database both create
 * them, and the second, which waited for the first's commit, finds them
 * made), the lock (DESIGN), and the wait for the locks of the rest.
 */
static const char bootstrap_sql[] =
	"BEGIN;"
	/* No deadline, whatever ALTER DATABASE or ROLE ... SET statement_timeout gave the session.
	 */
	" SET LOCAL statement_timeout = 0;"
	" DO $bootstrap$ BEGIN"
	/* Migration 017's SQL-standard function bodies need 14. */
	" IF current_setting('server_version_num')::integer < 140000 THEN"
	" RAISE EXCEPTION 'reghook needs PostgreSQL 14 or newer; this server is %',"
	" current_setting('server_version');"
	" END IF;"
	/* A role without USAGE on an existing schema: say so, and who can mend it. */
	" IF to_regnamespace('reghook') IS NOT NULL AND NOT has_schema_privilege('reghook', "
	"'USAGE') THEN"
	" RAISE EXCEPTION 'role % may not use schema reghook, which % owns', "
	"quote_ident(current_user),"
	" (SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'reghook')"
	" USING HINT = 'Run reghook migrate once as its owner: it gives this database''s group "
	"roles"
	" their grants again (a restore with --no-owner or --no-privileges, or without the "
	"cluster''s"
	" roles, loses them). The role of reghook serve needs to be a member of the dispatcher"
	" role.';"
	" END IF;"
	/* Registry events are UTF-8 text: in another encoding some cannot be stored. */
	" IF current_setting('server_encoding') <> 'UTF8' THEN"
	" IF to_regclass('reghook.schema_migrations') IS NULL THEN"
	" RAISE EXCEPTION 'this database''s encoding is %: registry events are UTF-8 text, which "
	"it cannot always hold; create the database with ENCODING ''UTF8'' "
	"(createdb -E UTF8 -T template0 NAME)', current_setting('server_encoding');"
	" END IF;"
	" RAISE WARNING 'this database''s encoding is %: events holding characters it lacks are "
	"refused (400), and the registry sends them again and again; move reghook to a "
	"database whose encoding is UTF8', current_setting('server_encoding');"
	" END IF;"
	" IF to_regclass('reghook.schema_migrations') IS NULL THEN"
	" BEGIN"
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
	" EXCEPTION WHEN unique_violation OR duplicate_schema OR duplicate_table THEN NULL;"
	" END;"
	" END IF;"
	" IF has_table_privilege('reghook.schema_migrations', 'UPDATE') THEN"
	" LOCK TABLE reghook.schema_migrations IN SHARE ROW EXCLUSIVE MODE;"
	" END IF;"
	" END $bootstrap$;"
	" SET LOCAL lock_timeout = '" MIGRATE_LOCK_TIMEOUT "'";

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

/*
 * The line of `text` that a failed query points at, or 0 if it points at
 * none of it. The query was MIGRATE_SEARCH_PATH followed by `text`;
 * PostgreSQL's position counts its characters from 1, and `text` is UTF-8,
 * whose continuation bytes are no characters.
 */
static int error_line(const PGresult *res, const char *text)
{
	const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
	long left = pos ? atol(pos) - (long)strlen(MIGRATE_SEARCH_PATH) : 0;
	int line = 1;
	if (left <= 0)
		return 0;
	for (const char *p = text; *p; p++) {
		if (((unsigned char)*p & 0xc0) != 0x80 && --left == 0)
			return line;
		if (*p == '\n')
			line++;
	}
	return 0;
}

/* "what" names the file that failed, and the line PostgreSQL points at. */
static void name_failure(char *what, size_t size, const char *file, const char *text,
			 const PGresult *res)
{
	int line = error_line(res, text);
	if (line)
		snprintf(what, size, "%s, line %d", file, line);
	else
		snprintf(what, size, "%s", file);
}

static void set_error(struct migrate *m, const char *what, PGresult *res)
{
	struct buf b = BUF_INIT;
	buf_printf(&b, "%s: %s", what, pgc_error(res));
	const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
	if (hint)
		buf_printf(&b, " (%s)", hint);
	if (!m->error)
		m->error = buf_steal(&b);
	buf_free(&b);
}

static void query(struct pgc *c, struct migrate *m, enum migrate_step step, const char *sql)
{
	m->step = step;
	pgc_query(c, sql, 0, NULL, on_result, m);
}

/*
 * Whether a failure is a lock cycle with the statements of running
 * instances, which a try with every table locked first gets past: a
 * migration's lock on one busy table (027's index on deliveries), held
 * while FUNCTIONS_LOCK waited for another that an ingest() held while it
 * waited for the first, was a cycle only the lock timeout broke (or
 * PostgreSQL's deadlock detector, a statement's own lock): under a steady
 * stream of events every run failed, holding the events up 2 s each time.
 * Not the first try's way: while the numbered migrations run, the tables
 * they do not touch stay usable (024 reads the whole history for minutes,
 * while events are stored and the history read), and it gets through
 * whenever the instances are quiet for a moment.
 */
static bool lock_cycle(const struct migrate *m, const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	return !m->lock_first && m->applied_v_missing && state &&
	       (strcmp(state, "55P03") == 0 || strcmp(state, "40P01") == 0) &&
	       (m->step == MIGRATE_APPLYING || m->step == MIGRATE_LOCKING);
}

/* After a failure: roll the transaction back. */
static void fail(struct pgc *c, struct migrate *m, const char *what, PGresult *res)
{
	if (lock_cycle(m, res)) {
		log_info("%s: %s; trying again at once with every table of the schema locked "
			 "first (the statements of running instances then wait while the "
			 "migrations run)",
			 what, pgc_error(res));
		m->lock_first = true;
		query(c, m, MIGRATE_RESTART, "ROLLBACK");
		return;
	}
	set_error(m, what, res);
	if (!res) {
		finish(m); /* the session is gone, and with it the transaction */
		return;
	}
	query(c, m, MIGRATE_ROLLBACK, "ROLLBACK");
}

static void compare_functions(struct pgc *c, struct migrate *m)
{
	if (m->db_newer) {
		log_warn("the database has migrations newer than this reghook's %03d: "
			 "its functions are kept as they are",
			 migrate_latest_version());
		query(c, m, MIGRATE_COMMITTING, "COMMIT");
		return;
	}
	const char *params[] = {FUNCTIONS_MANIFEST};
	m->step = MIGRATE_COMPARING;
	pgc_query(c,
		  "SELECT coalesce((SELECT string_agg(file || ' ' || sha256 || E'\\n', '' "
		  "ORDER BY file COLLATE \"C\") FROM reghook.schema_functions), '') <> $1, "
		  "pg_has_role(current_user, (SELECT nspowner FROM pg_namespace "
		  "WHERE nspname = 'reghook'), 'MEMBER')",
		  1, params, on_result, m);
}

static void apply_next(struct pgc *c, struct migrate *m)
{
	while (m->next < NMIGRATIONS && m->applied_v[m->next])
		m->next++;
	if (m->next >= NMIGRATIONS) {
		compare_functions(c, m);
		return;
	}
	const struct migration_src *src = &migration_srcs[m->next];
	struct buf sql = BUF_INIT;
	log_info("applying migration %03d_%s", src->version, src->name);
	buf_printf(&sql,
		   MIGRATE_SEARCH_PATH
		   "%s\n;"
		   /* Whatever a migration forgets, PUBLIC calls no function of the
		    * schema: default privileges per schema cannot take EXECUTE away
		    * from PUBLIC, so it is taken here, in the same transaction. */
		   "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reghook FROM PUBLIC;\n"
		   "INSERT INTO reghook.schema_migrations (version, name) VALUES (%d, '%s');",
		   src->sql, src->version, src->name);
	query(c, m, MIGRATE_APPLYING, sql.data);
	buf_free(&sql);
}

static void apply_function_file(struct pgc *c, struct migrate *m)
{
	if (m->next >= NFUNCTIONS) {
		struct buf sql = BUF_INIT;
		buf_puts(&sql, "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reghook FROM PUBLIC;\n"
			       "DELETE FROM reghook.schema_functions;\n"
			       "INSERT INTO reghook.schema_functions (file, sha256) VALUES ");
		for (int i = 0; i < NFUNCTIONS; i++)
			buf_printf(&sql, "%s('%s', '%s')", i ? ", " : "", function_srcs[i].file,
				   function_srcs[i].sha256);
		query(c, m, MIGRATE_RECORDING, sql.data);
		buf_free(&sql);
		return;
	}
	struct buf sql = BUF_INIT;
	log_info("applying schema/functions/%s", function_srcs[m->next].file);
	buf_printf(&sql, MIGRATE_SEARCH_PATH "%s\n;", function_srcs[m->next].sql);
	query(c, m, MIGRATE_FUNCTIONS, sql.data);
	buf_free(&sql);
}

static void on_result(struct pgc *c, PGresult *res, void *arg)
{
	struct migrate *m = arg;
	char what[160];

	switch (m->step) {
	case MIGRATE_BOOTSTRAP:
		if (!pgc_ok(res))
			return fail(c, m, "creating schema reghook", res);
		/* One row at least (version NULL on a new schema), each saying who may apply. */
		query(c, m, MIGRATE_READING,
		      "SELECT v.version, p.may, p.who, p.owner FROM (SELECT "
		      "pg_catalog.has_table_privilege('reghook.schema_migrations', 'UPDATE') AS "
		      "may, "
		      "pg_catalog.quote_ident(current_user) AS who, (SELECT "
		      "nspowner::regrole::text "
		      "FROM pg_catalog.pg_namespace WHERE nspname = 'reghook') AS owner) p "
		      "LEFT JOIN reghook.schema_migrations v ON true");
		break;
	case MIGRATE_READING: {
		if (!pgc_ok(res))
			return fail(c, m, "reading applied migrations", res);
		int latest = 0, missing = 0;
		for (int i = 0; i < PQntuples(res); i++) {
			if (PQgetisnull(res, i, 0))
				continue;
			int v = atoi(PQgetvalue(res, i, 0));
			latest = v > latest ? v : latest;
			if (v > migrate_latest_version())
				m->db_newer = true;
			for (int j = 0; j < NMIGRATIONS; j++)
				if (migration_srcs[j].version == v)
					m->applied_v[j] = true;
		}
		for (int j = 0; j < NMIGRATIONS; j++)
			missing += !m->applied_v[j];
		m->applied_v_missing = missing > 0;
		if (!missing) {
			apply_next(c, m);
			break;
		}
		/* A role that may not apply them (the dispatcher's: reghook serve's login
		 * in README's roles) would fail on the first statement it may not run,
		 * naming a function or table that has nothing to do with it. */
		if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
			char why[320];
			snprintf(
				why, sizeof(why),
				"the schema is at migration %03d and this reghook needs %03d: role "
				"%s may not change it; run reghook migrate once as the schema's "
				"owner (%s)",
				latest, migrate_latest_version(), PQgetvalue(res, 0, 2),
				PQgetvalue(res, 0, 3));
			if (!m->error)
				m->error = xstrdup(why);
			query(c, m, MIGRATE_ROLLBACK, "ROLLBACK");
			break;
		}
		if (m->lock_first)
			query(c, m, MIGRATE_LOCKING_FIRST, FUNCTIONS_LOCK);
		else
			apply_next(c, m);
		break;
	}
	case MIGRATE_LOCKING_FIRST:
		if (!pgc_ok(res))
			return fail(c, m, "locking the schema's tables", res);
		m->locked = true;
		apply_next(c, m);
		break;
	case MIGRATE_APPLYING:
		if (!pgc_ok(res)) {
			char file[96];
			snprintf(file, sizeof(file), "migration %03d_%s",
				 migration_srcs[m->next].version, migration_srcs[m->next].name);
			name_failure(what, sizeof(what), file, migration_srcs[m->next].sql, res);
			return fail(c, m, what, res);
		}
		m->applied++;
		m->next++;
		apply_next(c, m);
		break;
	case MIGRATE_COMPARING:
		if (!pgc_ok(res))
			return fail(c, m, "reading reghook.schema_functions", res);
		if (m->applied == 0 && strcmp(PQgetvalue(res, 0, 0), "f") == 0) {
			/* The owner mends what a move of the database undid (access.sql). */
			if (strcmp(PQgetvalue(res, 0, 1), "t") == 0)
				query(c, m, MIGRATE_CARING,
				      "SELECT reghook.group_roles_need_care()");
			else
				query(c, m, MIGRATE_COMMITTING, "COMMIT");
			break;
		}
		if (m->locked) {
			m->next = 0;
			apply_function_file(c, m);
		} else {
			query(c, m, MIGRATE_LOCKING, FUNCTIONS_LOCK);
		}
		break;
	case MIGRATE_CARING:
		if (!pgc_ok(res))
			return fail(c, m, "checking the group roles", res);
		if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
			log_info(
				"the group roles of this database lack their grants, their binding "
				"or their existence (a restored or renamed database): applying "
				"schema/functions/ again");
			query(c, m, MIGRATE_LOCKING, FUNCTIONS_LOCK);
		} else {
			query(c, m, MIGRATE_COMMITTING, "COMMIT");
		}
		break;
	case MIGRATE_LOCKING:
		if (!pgc_ok(res))
			return fail(c, m, "locking the schema's tables", res);
		m->next = 0;
		apply_function_file(c, m);
		break;
	case MIGRATE_FUNCTIONS:
		if (!pgc_ok(res)) {
			char file[96];
			snprintf(file, sizeof(file), "schema/functions/%s",
				 function_srcs[m->next].file);
			name_failure(what, sizeof(what), file, function_srcs[m->next].sql, res);
			return fail(c, m, what, res);
		}
		m->next++;
		apply_function_file(c, m);
		break;
	case MIGRATE_RECORDING:
		if (!pgc_ok(res))
			return fail(c, m, "recording reghook.schema_functions", res);
		query(c, m, MIGRATE_COMMITTING, "COMMIT");
		break;
	case MIGRATE_COMMITTING:
		if (!pgc_ok(res))
			return fail(c, m, "committing the migrations", res);
		finish(m);
		break;
	case MIGRATE_ROLLBACK:
		finish(m); /* rolled back, or the session (and its transaction) is gone */
		break;
	case MIGRATE_RESTART:
		if (!res) {
			set_error(m, "beginning the migrations again", res);
			finish(m);
			break;
		}
		memset(m->applied_v, 0, sizeof(m->applied_v));
		m->db_newer = m->locked = false;
		m->next = m->applied = 0;
		query(c, m, MIGRATE_BOOTSTRAP, bootstrap_sql);
		break;
	}
}

struct migrate *migrate_run(struct pgc *c, migrate_done_fn done, void *arg)
{
	struct migrate *m = xcalloc(1, sizeof(*m));
	m->done = done;
	m->arg = arg;
	m->c = c;
	m->timeout_ms = pgc_query_timeout(c);
	pgc_set_query_timeout(c, 0);
	query(c, m, MIGRATE_BOOTSTRAP, bootstrap_sql);
	return m;
}

void migrate_abandon(struct migrate *m)
{
	if (!m)
		return;
	free(m->error);
	free(m);
}
