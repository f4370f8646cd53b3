/*
 * pgc: see pgc.h.
 *
 * DESIGN. One state enum drives everything; pgc_set_state() is the only
 * place it changes. A single non-persistent socket event is re-armed after
 * every step with exactly the interest libpq asked for (read, write, or
 * both while a send is still flushing); while idle the read interest stays
 * armed so that notifications and a server shutdown are seen at once.
 * A timer serves both the reconnect backoff and the connect timeout.
 */
#include "pgc.h"
#include "buf.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

enum pgc_state {
	PGC_DOWN, /* not connected: entered at start and on any failure; left when the retry timer
		     fires */
	PGC_CONNECTING, /* PQconnectPoll under way: left for IDLE on success, DOWN on failure */
	PGC_IDLE, /* connected, nothing sent: left for BUSY when a query is sent, DOWN on failure */
	PGC_BUSY, /* a query sent, its results not all read: left for IDLE or DOWN */
};

struct pgc_query {
	STAILQ_ENTRY(pgc_query) link;
	char *sql; /* owned */
	int nparams;
	char **params; /* owned, each owned; NULL entries are SQL NULL */
	pgc_result_fn fn;
	void *arg;
};
STAILQ_HEAD(pgc_queries, pgc_query);

struct pgc {
	struct event_base *base; /* borrowed */
	char *conninfo;		 /* owned */
	struct pgc_hooks hooks;
	void *arg;

	enum pgc_state state;
	PGconn *conn; /* owned; NULL while DOWN */
	struct event *io;
	struct event *timer;
	int backoff_ms;

	struct pgc_queries queue; /* owned; the first is the running query while BUSY */
	int queued;
	PGresult *result; /* owned: the result kept for the running query */

	int depth;   /* callbacks on the stack */
	bool doomed; /* pgc_free() called while depth > 0 */
};

#define CONNECT_TIMEOUT_MS 10000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

static void on_io(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static void start_next(struct pgc *c);

static const char *const state_names[] = {"down", "connecting", "idle", "busy"};

static void pgc_set_state(struct pgc *c, enum pgc_state s)
{
	/* Connection changes are worth a debug line; query traffic is not. */
	if (c->state != s && (s <= PGC_CONNECTING || c->state <= PGC_CONNECTING))
		log_debug("pgc %p: %s -> %s", (void *)c, state_names[c->state], state_names[s]);
	c->state = s;
}

static void arm(struct pgc *c, short what, int timeout_ms)
{
	event_del(c->io);
	event_assign(c->io, c->base, PQsocket(c->conn), what, on_io, c);
	if (timeout_ms > 0) {
		struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
		event_add(c->io, &tv);
	} else {
		event_add(c->io, NULL);
	}
}

static void query_free(struct pgc_query *q)
{
	free(q->sql);
	for (int i = 0; i < q->nparams; i++)
		free(q->params[i]);
	free(q->params);
	free(q);
}

static struct pgc_query *pop(struct pgc *c)
{
	struct pgc_query *q = STAILQ_FIRST(&c->queue);
	STAILQ_REMOVE_HEAD(&c->queue, link);
	c->queued--;
	return q;
}

static void finish_query(struct pgc *c, PGresult *res)
{
	struct pgc_query *q = pop(c);
	c->depth++;
	q->fn(c, res, q->arg);
	c->depth--;
	query_free(q);
}

static void go_down(struct pgc *c, const char *why)
{
	bool was_up = c->state == PGC_IDLE || c->state == PGC_BUSY;
	char reason[512];

	snprintf(reason, sizeof(reason), "%s", why);
	/* libpq messages end in a newline; log lines should not. */
	reason[strcspn(reason, "\n")] = '\0';
	event_del(c->io);
	if (c->conn) {
		PQfinish(c->conn);
		c->conn = NULL;
	}
	if (c->result) {
		PQclear(c->result);
		c->result = NULL;
	}
	pgc_set_state(c, PGC_DOWN);

	/*
	 * Nothing queued can be known to have run; the owners decide. The queue
	 * is detached first: a callback that queues again waits for the
	 * reconnect instead of being answered in this loop.
	 */
	struct pgc_queries lost = STAILQ_HEAD_INITIALIZER(lost);
	STAILQ_CONCAT(&lost, &c->queue);
	c->queued = 0;
	while (!STAILQ_EMPTY(&lost)) {
		struct pgc_query *q = STAILQ_FIRST(&lost);
		STAILQ_REMOVE_HEAD(&lost, link);
		c->depth++;
		q->fn(c, NULL, q->arg);
		c->depth--;
		query_free(q);
	}

	c->depth++;
	if (c->hooks.down)
		c->hooks.down(c, reason, c->arg);
	c->depth--;

	if (was_up)
		c->backoff_ms = BACKOFF_MIN_MS;
	struct timeval tv = {c->backoff_ms / 1000, (c->backoff_ms % 1000) * 1000};
	evtimer_add(c->timer, &tv);
	c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void poll_connect(struct pgc *c)
{
	switch (PQconnectPoll(c->conn)) {
	case PGRES_POLLING_READING:
		arm(c, EV_READ, CONNECT_TIMEOUT_MS);
		break;
	case PGRES_POLLING_WRITING:
		arm(c, EV_WRITE, CONNECT_TIMEOUT_MS);
		break;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(c->conn, 1) != 0) {
			go_down(c, PQerrorMessage(c->conn));
			return;
		}
		c->backoff_ms = BACKOFF_MIN_MS;
		pgc_set_state(c, PGC_IDLE);
		arm(c, EV_READ, 0);
		c->depth++;
		if (c->hooks.up)
			c->hooks.up(c, c->arg);
		c->depth--;
		if (c->state == PGC_IDLE)
			start_next(c);
		break;
	default:
		go_down(c, PQerrorMessage(c->conn));
	}
}

/*
 * Server notices (IF NOT EXISTS skips, ...) are for debugging, not for
 * stderr; a WARNING (a migration telling the operator what to review) is
 * logged as a warning, with its hint.
 */
static void on_notice(void *arg, const PGresult *res)
{
	(void)arg;
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *text = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	if (!text)
		text = "";
	if (severity && strcmp(severity, "WARNING") == 0)
		log_warn("database warning: %s%s%s%s", text, hint ? " (" : "", hint ? hint : "",
			 hint ? ")" : "");
	else
		log_debug("database notice: %.*s", (int)strcspn(text, "\n"), text);
}

static void start_connect(struct pgc *c)
{
	c->conn = PQconnectStart(c->conninfo);
	if (!c->conn)
		fatal("pgc: out of memory starting a connection");
	PQsetNoticeReceiver(c->conn, on_notice, c);
	pgc_set_state(c, PGC_CONNECTING);
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		go_down(c, PQerrorMessage(c->conn));
		return;
	}
	poll_connect(c);
}

static void dispatch_notifies(struct pgc *c)
{
	PGnotify *n;
	while (c->conn && (n = PQnotifies(c->conn)) != NULL) {
		c->depth++;
		if (c->hooks.notify)
			c->hooks.notify(c, n->relname, n->extra, c->arg);
		c->depth--;
		PQfreemem(n);
	}
}

/* Sends more of the running query; returns false after going down. */
static bool flush(struct pgc *c)
{
	int r = PQflush(c->conn);
	if (r < 0) {
		go_down(c, PQerrorMessage(c->conn));
		return false;
	}
	/* While output is pending libpq also needs input read, or the server may stall. */
	arm(c, r == 1 ? EV_READ | EV_WRITE : EV_READ, 0);
	return true;
}

static void start_next(struct pgc *c)
{
	if (c->state != PGC_IDLE || STAILQ_EMPTY(&c->queue) || c->doomed)
		return;
	struct pgc_query *q = STAILQ_FIRST(&c->queue);
	int sent;
	if (q->nparams == 0)
		sent = PQsendQuery(c->conn, q->sql);
	else
		sent = PQsendQueryParams(c->conn, q->sql, q->nparams, NULL,
					 (const char *const *)q->params, NULL, NULL, 0);
	if (!sent) {
		go_down(c, PQerrorMessage(c->conn));
		return;
	}
	pgc_set_state(c, PGC_BUSY);
	flush(c);
}

/* Reads what arrived; completes the running query when its results are all in. */
static void read_input(struct pgc *c)
{
	if (!PQconsumeInput(c->conn)) {
		go_down(c, PQerrorMessage(c->conn));
		return;
	}
	dispatch_notifies(c);
	while (c->state == PGC_BUSY && !PQisBusy(c->conn)) {
		PGresult *res = PQgetResult(c->conn);
		if (res) {
			/* Keep the first error, else the last result. */
			if (c->result && !pgc_ok(c->result)) {
				PQclear(res);
			} else {
				if (c->result)
					PQclear(c->result);
				c->result = res;
			}
			continue;
		}
		res = c->result;
		c->result = NULL;
		pgc_set_state(c, PGC_IDLE);
		finish_query(c, res);
		PQclear(res);
		if (c->doomed || !c->conn)
			return;
		dispatch_notifies(c);
		if (c->state == PGC_IDLE)
			start_next(c);
	}
	if (!c->conn)
		return;
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		go_down(c, PQerrorMessage(c->conn));
		return;
	}
	/* Wait for more: the rest of the results, the next notification, or EOF. */
	if (c->state == PGC_BUSY)
		flush(c);
	else if (c->state == PGC_IDLE)
		arm(c, EV_READ, 0);
}

static void really_free(struct pgc *c)
{
	event_free(c->io);
	event_free(c->timer);
	if (c->conn)
		PQfinish(c->conn);
	if (c->result)
		PQclear(c->result);
	while (!STAILQ_EMPTY(&c->queue))
		query_free(pop(c));
	free(c->conninfo);
	free(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct pgc *c = arg;
	c->depth++;
	switch (c->state) {
	case PGC_CONNECTING:
		if (what & EV_TIMEOUT)
			go_down(c, "timed out connecting to the database");
		else
			poll_connect(c);
		break;
	case PGC_BUSY:
		if ((what & EV_WRITE) && !flush(c))
			break;
		if (what & EV_READ)
			read_input(c);
		break;
	case PGC_IDLE:
		read_input(c);
		break;
	case PGC_DOWN:
		break;
	}
	c->depth--;
	if (c->doomed && c->depth == 0)
		really_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pgc *c = arg;
	c->depth++;
	if (c->state == PGC_DOWN)
		start_connect(c);
	c->depth--;
	if (c->doomed && c->depth == 0)
		really_free(c);
}

struct pgc *pgc_new(struct event_base *base, const char *conninfo, const struct pgc_hooks *hooks,
		    void *arg)
{
	struct pgc *c = xcalloc(1, sizeof(*c));
	c->base = base;
	c->conninfo = xstrdup(conninfo);
	if (hooks)
		c->hooks = *hooks;
	c->arg = arg;
	STAILQ_INIT(&c->queue);
	c->state = PGC_DOWN;
	c->backoff_ms = BACKOFF_MIN_MS;
	c->io = event_new(base, -1, 0, on_io, c);
	c->timer = evtimer_new(base, on_timer, c);
	/* Connect from the loop, so that hooks never run inside pgc_new(). */
	struct timeval now = {0, 0};
	evtimer_add(c->timer, &now);
	return c;
}

void pgc_free(struct pgc *c)
{
	if (!c)
		return;
	if (c->depth > 0) {
		c->doomed = true;
		event_del(c->io);
		event_del(c->timer);
		return;
	}
	really_free(c);
}

void pgc_query(struct pgc *c, const char *sql, int nparams, const char *const *params,
	       pgc_result_fn fn, void *arg)
{
	struct pgc_query *q = xcalloc(1, sizeof(*q));
	q->sql = xstrdup(sql);
	q->nparams = nparams;
	if (nparams > 0) {
		q->params = xcalloc((size_t)nparams, sizeof(char *));
		for (int i = 0; i < nparams; i++)
			q->params[i] = params[i] ? xstrdup(params[i]) : NULL;
	}
	q->fn = fn;
	q->arg = arg;
	STAILQ_INSERT_TAIL(&c->queue, q, link);
	c->queued++;
	if (c->state == PGC_IDLE)
		start_next(c);
}

bool pgc_is_up(const struct pgc *c)
{
	return c->state == PGC_IDLE || c->state == PGC_BUSY;
}

bool pgc_is_idle(const struct pgc *c)
{
	return c->state == PGC_IDLE && STAILQ_EMPTY(&c->queue);
}

int pgc_queued(const struct pgc *c)
{
	return c->queued;
}

void pgc_reset(struct pgc *c, const char *why)
{
	if (c->state == PGC_DOWN)
		return;
	c->depth++;
	go_down(c, why);
	c->depth--;
	if (c->doomed && c->depth == 0)
		really_free(c);
}

bool pgc_ok(const PGresult *res)
{
	if (!res)
		return false;
	ExecStatusType st = PQresultStatus(res);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
}

const char *pgc_error(const PGresult *res)
{
	if (!res)
		return "connection to the database lost";
	const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	return m ? m : PQresultErrorMessage(res);
}

const char *pgc_sqlstate(const PGresult *res)
{
	const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	return s ? s : "";
}
