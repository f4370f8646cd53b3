/*
 * janitor: see janitor.h. Apart from the delivery engine, as PgBouncer
 * keeps its janitor apart from the pooler: pruning shares nothing with
 * claiming and sending but a connection.
 *
 * One round at a time: a round that outlasts PRUNE_MS (a large expiry)
 * goes on, and the timer starts none beside it, so the attempt records
 * never queue behind more than one prune_history_from() call.
 */
#include "janitor.h"
#include "buf.h"
#include "daemon.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define PRUNE_MS 600000	  /* how often old history is pruned */
#define PRUNE_BATCH "500" /* rows per prune_history_from() call */

enum janitor_state {
	/* Entered at janitor_new(); left for IDLE when the schema is current. */
	JANITOR_WAITING,
	/* Entered from WAITING by janitor_start(), and from PRUNING when a
	 * call found nothing old or failed; left for PRUNING by prune_round(). */
	JANITOR_IDLE,
	/* A prune_history_from() call is in flight. Entered from IDLE, and again
	 * from itself while calls find old rows; left for IDLE. */
	JANITOR_PRUNING,
	/* Entered by janitor_stop(); never left. */
	JANITOR_STOPPED,
};

struct janitor {
	struct daemon *d;    /* borrowed */
	struct pgc *conn;    /* borrowed: the delivery engine's write connection */
	struct event *timer; /* owned */
	enum janitor_state state;
	/* Where prune_history_from()'s scan for old events that no delivery refers
	 * to goes on (received_at, id): "-infinity" at the start of a round's
	 * pass over them, "infinity" once it is over (one pass a round). */
	char orphans_from[64];
	char orphans_from_id[24];
};

static void orphans_from(struct janitor *j, const char *at, const char *id)
{
	snprintf(j->orphans_from, sizeof(j->orphans_from), "%s", at);
	snprintf(j->orphans_from_id, sizeof(j->orphans_from_id), "%s", id);
}

static void janitor_set_state(struct janitor *j, enum janitor_state state)
{
	j->state = state;
}

static void prune_batch(struct janitor *j);

/* Small batches, one after another, until nothing old is left. */
static void on_pruned(struct pgc *c, PGresult *res, void *arg)
{
	struct janitor *j = arg;
	if (j->state != JANITOR_PRUNING)
		return;
	if (!pgc_ok(res)) {
		if (res)
			log_error("pruning history: %s", pgc_error(res));
		janitor_set_state(j, JANITOR_IDLE);
		return;
	}
	bool edge = PQgetisnull(res, 0, 1);
	bool more = !edge && (strcmp(PQgetvalue(res, 0, 1), j->orphans_from) != 0 ||
			      strcmp(PQgetvalue(res, 0, 2), j->orphans_from_id) != 0);
	if (edge)
		orphans_from(j, "infinity", "0");
	else
		orphans_from(j, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
	/* Rows went, or the pass over unreferenced events has more to look at. */
	if (atoi(PQgetvalue(res, 0, 0)) > 0 || more)
		prune_batch(j);
	else
		janitor_set_state(j, JANITOR_IDLE);
}

static void prune_batch(struct janitor *j)
{
	if (!pgc_is_up(j->conn)) {
		janitor_set_state(j, JANITOR_IDLE);
		return;
	}
	char retention[32];
	snprintf(retention, sizeof(retention), "%lld", j->d->cfg->history_retention_ms);
	const char *params[] = {retention, PRUNE_BATCH, j->orphans_from, j->orphans_from_id};
	janitor_set_state(j, JANITOR_PRUNING);
	/* Not '2592000000 milliseconds'::interval: before PostgreSQL 15 a
	 * field of an interval's text is an int, and 30 days in ms overflows. */
	pgc_query(j->conn,
		  "SELECT pruned, orphans_next, orphans_next_id FROM reghook.prune_history_from("
		  "make_interval(secs => $1::bigint / 1000.0), $2, $3, $4)",
		  4, params, on_pruned, j);
}

/* A round, unless one is under way. */
static void prune_round(struct janitor *j)
{
	if (j->state != JANITOR_IDLE)
		return;
	orphans_from(j, "-infinity", "0");
	prune_batch(j);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	prune_round(arg);
}

struct janitor *janitor_new(struct daemon *d, struct pgc *conn)
{
	struct janitor *j = xcalloc(1, sizeof(*j));
	j->d = d;
	j->conn = conn;
	orphans_from(j, "-infinity", "0");
	janitor_set_state(j, JANITOR_WAITING);
	j->timer = event_new(d->base, -1, EV_PERSIST, on_timer, j);
	struct timeval every = {PRUNE_MS / 1000, 0};
	event_add(j->timer, &every);
	return j;
}

void janitor_start(struct janitor *j)
{
	if (j->state != JANITOR_WAITING)
		return;
	janitor_set_state(j, JANITOR_IDLE);
	prune_round(j);
}

void janitor_connected(struct janitor *j)
{
	prune_round(j);
}

void janitor_stop(struct janitor *j)
{
	janitor_set_state(j, JANITOR_STOPPED);
	event_del(j->timer);
}

void janitor_free(struct janitor *j)
{
	if (!j)
		return;
	event_free(j->timer);
	free(j);
}
