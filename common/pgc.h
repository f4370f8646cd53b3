/*
 * pgc: one asynchronous PostgreSQL connection driven by a libevent loop.
 *
 * Nothing here blocks: the connection is opened with PQconnectStartParams
 * and PQconnectPoll, queries are sent with PQsendQuery[Params] on a
 * non-blocking socket, and results are read as the socket becomes readable.
 * Queries queue in order; each one's callback gets its final result (and
 * pgc_query_tx's early callback its rows before their commit). When
 * the server goes away every queued query is answered with a NULL result
 * (its outcome is unknown: the caller decides whether to retry) and the
 * connection reconnects by itself with a capped exponential backoff.
 *
 * Made for a primary that may fail over to a standby: unless the
 * connection string (or a PG* environment variable) says otherwise,
 * keepalives=1, keepalives_idle=5, keepalives_interval=2,
 * keepalives_count=3, tcp_user_timeout=10000, connect_timeout=5 and
 * target_session_attrs=read-write are set; the hosts of a multi-host string are tried one at a
 * time, each within connect_timeout, starting with the one that worked last; a query that outlives
 * its deadline (pgc_set_query_timeout) drops the connection, and so does an answer saying the
 * server is read-only or shutting down, so that the next host is tried.
 *
 * Owners learn of the connection coming up and going down through hooks,
 * and of LISTEN notifications through a third; they may queue queries from
 * any callback, and may pgc_free() from any callback: the object is freed
 * once the stack has unwound.
 */
#ifndef REGHOOK_PGC_H
#define REGHOOK_PGC_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>

struct pgc;

/* What went wrong on a connection, for its owner's counts (pgc_hooks.failed). */
enum pgc_failure {
	PGC_REFUSED, /* the server answered a query with an error */
	PGC_LOST,    /* the connection was lost while up (its queries answered NULL) */
};

struct pgc_hooks {
	void (*up)(struct pgc *c, void *arg);
	void (*down)(struct pgc *c, const char *why, void *arg);
	void (*notify)(struct pgc *c, const char *channel, const char *payload, void *arg);
	/* Each failure as it happens, before the query's callback or down (may be NULL). */
	void (*failed)(struct pgc *c, enum pgc_failure what, void *arg);
};

/*
 * A query's result: res is the last result of the query, or the first error
 * result if any statement failed; NULL if the connection failed before the
 * query completed. res is borrowed: it is cleared after the callback.
 */
typedef void (*pgc_result_fn)(struct pgc *c, PGresult *res, void *arg);

struct pgc *pgc_new(struct event_base *base, const char *conninfo, const struct pgc_hooks *hooks,
		    void *arg);
void pgc_free(struct pgc *c);

/*
 * The deadline of each query queued from now on, from the moment it is
 * sent to its last result (a commit included); 0, the initial value, for
 * none. A query past it drops the connection: it and every query queued
 * behind it are answered NULL.
 */
void pgc_set_query_timeout(struct pgc *c, int ms);
/*
 * PostgreSQL's own statement_timeout for the sessions from the next one
 * on (0: the server's): a query the connection gave up at its deadline
 * would otherwise run on in the server, its result thrown away, and a
 * request that always times out (a fan-out of millions of deliveries)
 * would pile such statements up at each retry. For connections that run
 * no statement meant to outlast the deadline (not the migrations').
 */
void pgc_set_statement_timeout(struct pgc *c, int ms);
int pgc_query_timeout(const struct pgc *c);

/* Queues a query; params are copied. With nparams 0 the text may hold several statements. */
void pgc_query(struct pgc *c, const char *sql, int nparams, const char *const *params,
	       pgc_result_fn fn, void *arg);

/*
 * Queues one statement, with the parameters of pgc_query(), to run in a
 * transaction of its own, and calls early, if not NULL, with its
 * successful result as soon as the server has it, before its commit, which
 * may still fail or be lost (a libpq pipeline: the statement, a flush
 * request, and the sync point where it commits). fn is called last, as for
 * pgc_query(): with the statement's result once it is committed, the first
 * failed result, or NULL (the commit's outcome is unknown).
 */
void pgc_query_tx(struct pgc *c, const char *sql, int nparams, const char *const *params,
		  pgc_result_fn early, pgc_result_fn fn, void *arg);

/* Connected (a query may be running). */
bool pgc_is_up(const struct pgc *c);
/* Connected and nothing queued or running. */
bool pgc_is_idle(const struct pgc *c);
/* Queries queued or running. */
int pgc_queued(const struct pgc *c);
/* Drops the connection now (answering queued queries with NULL) and reconnects. */
void pgc_reset(struct pgc *c, const char *why);

/*
 * What each session runs first, before any query of its owner's (pgc does
 * it on every connection it makes): names in queries are looked up in
 * pg_catalog only (pg_temp is never searched for functions or operators).
 * Where a member may create objects in a schema of the search_path (public
 * is writable by all before PostgreSQL 15, and in databases upgraded from
 * one), a function or operator of theirs that matches a call's argument
 * types more closely than the built-in one (array_to_string(text[], text)
 * for the generic anyarray) would otherwise run with the privileges of
 * whoever ran the query: the daemon's, which reads every webhook's secrets,
 * or an operator's CLI. (So set_config() is named with its schema.) And
 * timestamps are written in ISO form, whatever the role's or database's
 * DateStyle: a value read back as text and sent again (the janitor's
 * cursor) is then the same instant. The rest of what a database's or
 * role's settings (ALTER DATABASE ... SET) could change under reghook's
 * SQL is set back too: its statements are written for read committed (a
 * database set to serializable failed claims, stores and attempt records
 * with serialization errors), with standard strings (off, '\1' and '\x01'
 * in the functions' regular expressions meant something else: every
 * ingest() failed), in UTF-8 (the events' text, whatever PGCLIENTENCODING
 * says), with commits that wait for the disk (synchronous_commit off
 * answered a registry 200 for events a crash could still lose; a stronger
 * setting, remote_apply say, is kept), and with no idle session timeout
 * (the daemon's connections rest between events and were dropped each
 * time; PostgreSQL 14 has it, and migrate says so of older servers).
 * The server also looks for its client every second while a statement
 * runs (client_connection_check_interval, 14 too): a `reghook migrate`
 * killed or interrupted while it built an index left the statement
 * running to its end, its locks held and the daemons' statements queued
 * behind them. On a Linux server only: elsewhere 14 refuses any value but
 * 0 (it needs POLLRDHUP; 15 takes kqueue too, Windows neither), and a
 * refusal would fail every session. version() names the server's platform.
 */
#define PGC_SESSION_SQL                                                                            \
	"SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false),"               \
	" pg_catalog.set_config('datestyle', 'ISO', false),"                                       \
	" pg_catalog.set_config('client_encoding', 'UTF8', false),"                                \
	" pg_catalog.set_config('standard_conforming_strings', 'on', false),"                      \
	" pg_catalog.set_config('default_transaction_isolation', 'read committed', false),"        \
	" pg_catalog.set_config('synchronous_commit',"                                             \
	" CASE pg_catalog.current_setting('synchronous_commit') WHEN 'off' THEN 'on'"              \
	" ELSE pg_catalog.current_setting('synchronous_commit') END, false),"                      \
	" CASE WHEN pg_catalog.current_setting('server_version_num')::integer >= 140000"           \
	" THEN pg_catalog.set_config('idle_session_timeout', '0', false) END,"                     \
	" CASE WHEN pg_catalog.current_setting('server_version_num')::integer >= 140000"           \
	" AND pg_catalog.strpos(pg_catalog.version(), 'linux') > 0"                                \
	" THEN pg_catalog.set_config('client_connection_check_interval', '1000', false) END"

/*
 * What is wrong with conninfo (a URI, key=value pairs, or a database name)
 * that no connection can get past: NULL when nothing is; else why, in
 * the static text or in why. libpq cannot read it (its own message is not
 * for showing: it quotes the text at fault, the password perhaps); a URL
 * it would take for a database name (" postgresql://", "Postgres://",
 * "mysql://"); an option value it refuses only as it connects (sslmode,
 * port, connect_timeout, ...), named with the value.
 */
const char *pgc_conninfo_problem(const char *conninfo, char *why, size_t whylen);

/*
 * A blocking connection with the same defaults, for command-line tools
 * (libpq applies connect_timeout per host itself when it blocks). Never
 * NULL; check PQstatus(). The caller runs PGC_SESSION_SQL.
 */
PGconn *pgc_connectdb(const char *conninfo) __attribute__((warn_unused_result));

/* True if res is a successful command or tuples result. */
bool pgc_ok(const PGresult *res);
/* The error text of a failed result, or a fixed text for a lost connection. */
const char *pgc_error(const PGresult *res);
/* The SQLSTATE of a failed result, "" if none. */
const char *pgc_sqlstate(const PGresult *res);

#endif
