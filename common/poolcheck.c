/*
 * poolcheck: see poolcheck.h.
 *
 * DESIGN. The probe asks which server session serves each query: the
 * backend's pid together with its postmaster's start time, so that two
 * servers (hosts of a multi-host string) cannot be taken for one. Two
 * client connections, a and b, then play one round:
 *
 *   1. a runs a query: session A, which a leaves at the end of the
 *      transaction if a pooler hands sessions out per transaction;
 *   2. b opens a transaction and keeps it open: session B;
 *   3. a runs a query again, while b holds B: session A';
 *   4. b rolls back.
 *
 * A direct connection, or a pooler in session mode, gives each client a
 * session of its own for as long as it is connected: B is never A (two
 * clients connected at once never share a backend), and A' is always A (a
 * client's backend never changes while it is connected). Either sight is
 * therefore proof of pooling per transaction, never a false alarm, as long
 * as neither client reconnected meanwhile: a connection lost in a round
 * starts the probe over, as a failed query does. The
 * converse holds in practice: a pooler in transaction mode gives b the
 * session a has just left (PgBouncer reuses idle server connections last
 * in, first out), or, if another client took that one, may give a another
 * session in step 3; the round is played ROUNDS times so that a busy pool
 * has little chance to hide it.
 *
 * A query that fails or times out proves nothing: both connections are
 * reset and the probe starts over RETRY_MS later, once they are back. No
 * verdict is given until one is certain, so a database that is down only
 * delays it. One failure is telling, though: a pooler in statement mode
 * refuses the transaction of step 2 with a protocol violation (SQLSTATE
 * 08P01) and closes the connection, which neither PostgreSQL nor a pooler
 * in session mode ever does to a BEGIN; seen twice in a row, it is the
 * verdict.
 */
#include "poolcheck.h"
#include "buf.h"
#include "log.h"
#include "pgc.h"

#include <stdlib.h>
#include <string.h>

#define ROUNDS 3
#define RETRY_MS 1000
#define REFUSALS 2 /* transactions refused in a row that make a verdict */
#define SESSION_SQL "SELECT pg_backend_pid() || '@' || pg_postmaster_start_time()"

enum poolcheck_state {
	POOLCHECK_CONNECTING, /* waiting for both connections (and RETRY_MS after a failed step):
				 at start and after a failed step; left for FIRST */
	POOLCHECK_FIRST,      /* step 1 on a: left for HOLD */
	POOLCHECK_HOLD,	      /* step 2 on b: left for AGAIN, or DONE when B is A */
	POOLCHECK_AGAIN,      /* step 3 on a: left for RELEASE, or DONE when A' is not A */
	POOLCHECK_RELEASE,    /* step 4 on b: left for the next round's FIRST, or DONE */
	POOLCHECK_DONE,	      /* the verdict given; nothing more happens */
};

struct poolcheck {
	struct pgc *a, *b;   /* owned */
	struct event *retry; /* owned */
	enum poolcheck_state state;
	int round;
	int refusals;	/* transactions refused in a row (step 2 dropped with 08P01) */
	bool hold_lost; /* b was lost in step 2; its down hook says why */
	char first[64]; /* session A of this round */
	poolcheck_done_fn done;
	void *arg;
};

static void on_result(struct pgc *c, PGresult *res, void *arg);

static void poolcheck_set_state(struct poolcheck *p, enum poolcheck_state s)
{
	p->state = s;
}

static void verdict(struct poolcheck *p, bool shared, const char *detail)
{
	poolcheck_set_state(p, POOLCHECK_DONE);
	/* Last: the callback may free p. */
	p->done(shared, detail, p->arg);
}

static void begin_round(struct poolcheck *p)
{
	poolcheck_set_state(p, POOLCHECK_FIRST);
	pgc_query(p->a, SESSION_SQL, 0, NULL, on_result, p);
}

static void on_up(struct pgc *c, void *arg)
{
	struct poolcheck *p = arg;
	if (p->state == POOLCHECK_CONNECTING && pgc_is_up(p->a) && pgc_is_up(p->b) &&
	    !evtimer_pending(p->retry, NULL))
		begin_round(p);
}

static void start_over(struct poolcheck *p, PGresult *res);

/*
 * Runs after the lost queries were answered: when one of them was this
 * probe's, start_over() has run. A connection lost mid-round with none of
 * its queries under way (a between steps 1 and 3) starts it over too: its
 * next session, taken for the same client's, would be a false alarm.
 */
static void on_down(struct pgc *c, const char *why, void *arg)
{
	struct poolcheck *p = arg;
	if (p->state != POOLCHECK_CONNECTING && p->state != POOLCHECK_DONE) {
		log_warn("connection pooling check: a connection was lost (%s); trying again", why);
		start_over(p, NULL);
		return;
	}
	if (c != p->b || !p->hold_lost)
		return;
	p->hold_lost = false;
	if (!strstr(why, "SQLSTATE 08P01")) {
		p->refusals = 0;
		return;
	}
	if (++p->refusals < REFUSALS)
		return;
	char detail[512];
	snprintf(detail, sizeof(detail),
		 "a transaction opened on a client connection was refused and the connection "
		 "closed (%s)",
		 why);
	verdict(p, true, detail);
}

static const struct pgc_hooks hooks = {.up = on_up, .down = on_down};

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	on_up(NULL, arg);
}

/* A step failed: both sessions go (and b's transaction with its own), then again. */
static void start_over(struct poolcheck *p, PGresult *res)
{
	if (res)
		log_warn("connection pooling check: %s; trying again", pgc_error(res));
	poolcheck_set_state(p, POOLCHECK_CONNECTING);
	p->round = 0;
	struct timeval tv = {RETRY_MS / 1000, (RETRY_MS % 1000) * 1000};
	evtimer_add(p->retry, &tv);
	pgc_reset(p->a, "connection pooling check starting over");
	pgc_reset(p->b, "connection pooling check starting over");
}

static void on_result(struct pgc *c, PGresult *res, void *arg)
{
	struct poolcheck *p = arg;
	if (p->state == POOLCHECK_CONNECTING || p->state == POOLCHECK_DONE)
		return; /* a query that was under way when the probe started over */
	if (!pgc_ok(res) || PQntuples(res) != (p->state == POOLCHECK_RELEASE ? 0 : 1)) {
		p->hold_lost = !res && c == p->b && p->state == POOLCHECK_HOLD;
		start_over(p, pgc_ok(res) ? NULL : res);
		return;
	}
	const char *session = p->state == POOLCHECK_RELEASE ? "" : PQgetvalue(res, 0, 0);
	char detail[256];
	switch (p->state) {
	case POOLCHECK_FIRST:
		snprintf(p->first, sizeof(p->first), "%s", session);
		poolcheck_set_state(p, POOLCHECK_HOLD);
		pgc_query(p->b, "BEGIN; " SESSION_SQL, 0, NULL, on_result, p);
		break;
	case POOLCHECK_HOLD:
		p->refusals = 0;
		if (strcmp(session, p->first) == 0) {
			snprintf(
				detail, sizeof(detail),
				"two client connections were served by one server session (backend "
				"pid@start %s), one after the other",
				session);
			verdict(p, true, detail);
			return;
		}
		poolcheck_set_state(p, POOLCHECK_AGAIN);
		pgc_query(p->a, SESSION_SQL, 0, NULL, on_result, p);
		break;
	case POOLCHECK_AGAIN:
		if (strcmp(session, p->first) != 0) {
			snprintf(detail, sizeof(detail),
				 "one client connection was served by server session %s, then by "
				 "%s",
				 p->first, session);
			verdict(p, true, detail);
			return;
		}
		poolcheck_set_state(p, POOLCHECK_RELEASE);
		pgc_query(p->b, "ROLLBACK", 0, NULL, on_result, p);
		break;
	case POOLCHECK_RELEASE:
		if (++p->round < ROUNDS) {
			begin_round(p);
			return;
		}
		verdict(p, false, "each client connection kept its own server session");
		break;
	case POOLCHECK_CONNECTING:
	case POOLCHECK_DONE:
		break;
	}
}

struct poolcheck *poolcheck_start(struct event_base *base, const char *conninfo, int timeout_ms,
				  poolcheck_done_fn done, void *arg)
{
	struct poolcheck *p = xcalloc(1, sizeof(*p));
	p->done = done;
	p->arg = arg;
	poolcheck_set_state(p, POOLCHECK_CONNECTING);
	p->retry = evtimer_new(base, on_retry, p);
	p->a = pgc_new(base, conninfo, &hooks, p);
	p->b = pgc_new(base, conninfo, &hooks, p);
	pgc_set_query_timeout(p->a, timeout_ms);
	pgc_set_query_timeout(p->b, timeout_ms);
	return p;
}

void poolcheck_free(struct poolcheck *p)
{
	if (!p)
		return;
	pgc_free(p->a);
	pgc_free(p->b);
	event_free(p->retry);
	free(p);
}
