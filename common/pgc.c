/*
 * pgc: see pgc.h.
 *
 * DESIGN. One state enum drives everything; pgc_set_state() is the only
 * place it changes. A single non-persistent socket event is re-armed after
 * every step with exactly the interest libpq asked for (read, write, or
 * both while a send is still flushing); while idle the read interest stays
 * armed so that notifications and a server shutdown are seen at once.
 * Whenever a deadline runs (a connection attempt, a query), the socket
 * event carries the time left as its timeout; a second timer serves the
 * reconnect backoff.
 *
 * Hosts. libpq applies connect_timeout only when it blocks: PQconnectPoll
 * leaves the timing to the caller, and has no call to give up on one host
 * and go on with the next (its blocking loop does that with fields of its
 * own). So a multi-host connection string is split here, and each attempt
 * is a libpq connection to one host, the rest of the string unchanged: an
 * attempt that fails, or outlives connect_timeout, is closed and the next
 * host tried, until a round over all of them has failed; then the backoff.
 * A round starts with the host that last worked; a connection lost after
 * it was up moves that start to the next host, so that after a failover
 * (the old primary gone, cut off or read-only) reconnecting goes to the
 * new one first instead of waiting on the old one again.
 *
 * Settings. Each attempt is PQconnectStartParams with pgc's defaults
 * first and the caller's string last as an expanded `dbname`: libpq lets
 * every setting that string makes override the ones before it (and a host
 * of the split list comes after it, overriding the list). A default whose
 * PG* environment variable is set is left out, so the environment wins too.
 */
#include "pgc.h"
#include "buf.h"
#include "clock.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pg_config.h> /* DEF_PGPORT_STR: libpq's default port */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

enum pgc_state {
	PGC_DOWN, /* not connected: entered at start and after a failed round of hosts or a lost
		     connection; left when the backoff timer fires */
	PGC_CONNECTING, /* an attempt on one host under way: left for IDLE on success, for the next
			   host's attempt (still CONNECTING) or DOWN on failure */
	PGC_IDLE, /* connected, nothing sent: left for BUSY when a query is sent, DOWN on failure */
	PGC_BUSY, /* a query sent, its results not all read: left for IDLE or DOWN; its deadline
		     runs */
};

struct pgc_query {
	STAILQ_ENTRY(pgc_query) link;
	char *sql; /* owned */
	int nparams;
	char **params; /* owned, each owned; NULL entries are SQL NULL */
	int timeout_ms;
	pgc_result_fn fn;
	void *arg;
	/* pgc_query_tx(): the statement, a flush request and a sync point, pipelined */
	bool tx;
	pgc_result_fn early; /* called with the statement's result before its commit */
};
STAILQ_HEAD(pgc_queries, pgc_query);

/* One entry of a multi-host string; NULL members are not given for this host. */
struct pgc_host {
	char *host;	/* owned */
	char *hostaddr; /* owned */
	char *port;	/* owned */
};

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
	long long deadline; /* ms on the monotonic clock; 0 while none runs */
	int query_timeout_ms;
	char statement_timeout[24]; /* pgc_set_statement_timeout; "" for none */

	/* The hosts of a multi-host string (nhosts > 1), else none: libpq picks. */
	struct pgc_host *hosts; /* owned */
	int nhosts;
	int first;	       /* host a round starts with */
	int current;	       /* host of the attempt or connection */
	int tried;	       /* hosts tried in this round */
	int last_up;	       /* host of the last connection, -1 before the first */
	long long round_start; /* ms, monotonic */
	struct buf failures;   /* this round's reasons, host by host */

	struct pgc_queries queue; /* owned; the first is the running query while BUSY */
	int queued;
	PGresult *result; /* owned: the result kept for the running query */

	bool reset;  /* pgc_reset() is dropping the connection: no warning */
	bool warned; /* a failed round was logged as a warning since the last connection */
	int depth;   /* callbacks on the stack */
	bool doomed; /* pgc_free() called while depth > 0 */
};

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/*
 * Noticed in seconds: a peer that stops answering an idle connection after
 * 5 + 3 x 2 s of keepalive probes, or unacknowledged data after 10 s
 * (tcp_user_timeout, which also caps the probes); 5 s to connect to each
 * host (libpq takes values under 2 as 2); and a server that does not take
 * writes (a standby, a demoted primary) refused at connect.
 */
static const struct {
	const char *keyword, *value, *envvar;
} defaults[] = {
	{"keepalives", "1", NULL},
	{"keepalives_idle", "5", NULL},
	{"keepalives_interval", "2", NULL},
	{"keepalives_count", "3", NULL},
	{"tcp_user_timeout", "10000", NULL},
	{"connect_timeout", "5", "PGCONNECT_TIMEOUT"},
	{"target_session_attrs", "read-write", "PGTARGETSESSIONATTRS"},
};
#define NDEFAULTS (sizeof(defaults) / sizeof(defaults[0]))

static void on_io(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static struct pgc_query *enqueue(struct pgc *c, bool first, const char *sql, int nparams,
				 const char *const *params, pgc_result_fn fn, void *arg);
static void start_next(struct pgc *c);
static void start_connect(struct pgc *c);

static const char *const state_names[] = {"down", "connecting", "idle", "busy"};

static void pgc_set_state(struct pgc *c, enum pgc_state s)
{
	/* Connection changes are worth a debug line; query traffic is not. */
	if (c->state != s && (s <= PGC_CONNECTING || c->state <= PGC_CONNECTING))
		log_debug("pgc %p: %s -> %s", (void *)c, state_names[c->state], state_names[s]);
	/* Each state that has a deadline sets it anew on entry. */
	if (s == PGC_DOWN || s == PGC_IDLE)
		c->deadline = 0;
	c->state = s;
}

/* Waits for `what` on the socket, and for the deadline if one runs. */
static void arm(struct pgc *c, short what)
{
	event_del(c->io);
	event_assign(c->io, c->base, PQsocket(c->conn), what, on_io, c);
	if (c->deadline > 0) {
		long long left = c->deadline - clock_monotonic_ms();
		if (left < 1)
			left = 1;
		struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
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
	if (res && !pgc_ok(res) && c->hooks.failed)
		c->hooks.failed(c, PGC_REFUSED, c->arg);
	q->fn(c, res, q->arg);
	c->depth--;
	query_free(q);
}

/* "host:port" of the attempt or connection, for log lines. */
static void host_label(const struct pgc *c, char *out, size_t len)
{
	const char *host = c->conn ? PQhost(c->conn) : NULL;
	const char *port = c->conn ? PQport(c->conn) : NULL;
	bool v6 = host && strchr(host, ':'); /* [::1]:5432, as a URL writes it */
	snprintf(out, len, v6 ? "[%s]:%s" : "%s:%s", host && *host ? host : "?",
		 port && *port ? port : "?");
}

/* Closes the connection or attempt; the state is the caller's to set. */
static void close_conn(struct pgc *c)
{
	event_del(c->io);
	if (c->conn) {
		PQfinish(c->conn);
		c->conn = NULL;
	}
	if (c->result) {
		PQclear(c->result);
		c->result = NULL;
	}
}

static void go_down(struct pgc *c, const char *why)
{
	bool was_up = c->state == PGC_IDLE || c->state == PGC_BUSY;
	char reason[1024];

	snprintf(reason, sizeof(reason), "%s", why);
	/* libpq messages end in a newline; log lines should not. */
	reason[strcspn(reason, "\n")] = '\0';
	/* An error the server sent before it closed says more with its code. */
	const char *state = c->result && !pgc_ok(c->result) ? pgc_sqlstate(c->result) : "";
	if (*state && !strstr(reason, "SQLSTATE")) {
		size_t len = strlen(reason);
		snprintf(reason + len, sizeof(reason) - len, " (SQLSTATE %s)", state);
	}
	if (was_up && !c->reset) {
		char label[300];
		host_label(c, label, sizeof(label));
		log_warn("database: connection to %s lost: %s", label, reason);
	} else if (!was_up && !c->warned) {
		/* Once per outage; the rounds after it are for debugging. */
		log_warn("database: cannot connect: %s; trying again, at most every %d s", reason,
			 BACKOFF_MAX_MS / 1000);
		c->warned = true;
	} else if (!was_up) {
		log_debug("database: cannot connect: %s", reason);
	}
	close_conn(c);
	buf_free(&c->failures);
	pgc_set_state(c, PGC_DOWN);
	if (was_up && !c->reset && c->hooks.failed) {
		c->depth++;
		c->hooks.failed(c, PGC_LOST, c->arg);
		c->depth--;
	}
	if (was_up) {
		/* Whatever befell that host, the next round starts with the next one. */
		c->first = c->nhosts > 1 ? (c->current + 1) % c->nhosts : 0;
		c->backoff_ms = BACKOFF_MIN_MS;
		c->round_start = clock_monotonic_ms();
	}

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

	/*
	 * The backoff spaces the starts of rounds: a round that spent its
	 * time waiting on a host that does not answer is followed at once.
	 */
	long long wait = c->round_start + c->backoff_ms - clock_monotonic_ms();
	if (wait < 0)
		wait = 0;
	struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
	evtimer_add(c->timer, &tv);
	c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* The attempt on the current host failed: the next host, or DOWN after a whole round. */
static void attempt_failed(struct pgc *c, const char *why)
{
	char label[300];
	host_label(c, label, sizeof(label));
	size_t len = strcspn(why, "\n");
	if (c->nhosts > 1) {
		log_debug("pgc %p: %s: %.*s", (void *)c, label, (int)len, why);
		buf_printf(&c->failures, "%s%s: %.*s", c->failures.len ? "; " : "", label, (int)len,
			   why);
	} else {
		buf_printf(&c->failures, "%.*s", (int)len, why);
	}
	close_conn(c);
	if (++c->tried < c->nhosts) {
		c->current = (c->current + 1) % c->nhosts;
		start_connect(c);
		return;
	}
	struct buf reason = c->failures;
	c->failures = (struct buf)BUF_INIT;
	go_down(c, reason.data ? reason.data : "cannot connect");
	buf_free(&reason);
}

/* connect_timeout of the attempt as libpq settled it, in ms; 0 for none. */
static int connect_timeout_ms(PGconn *conn)
{
	PQconninfoOption *opts = PQconninfo(conn);
	int seconds = 0;
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "connect_timeout") == 0 && o->val)
			seconds = atoi(o->val);
	PQconninfoFree(opts);
	/* As libpq reads it when it blocks: none at 0, at least 2 s. */
	if (seconds <= 0)
		return 0;
	return (seconds < 2 ? 2 : seconds) * 1000;
}

/* The session's SET failed: the connection is not used. */
static void on_session_set(struct pgc *c, PGresult *res, void *arg)
{
	(void)arg;
	if (res && !pgc_ok(res)) {
		log_warn("database: %s: %s", PGC_SESSION_SQL, pgc_error(res));
		pgc_reset(c, "the session could not be set up");
	}
}

static void connected(struct pgc *c)
{
	if (PQsetnonblocking(c->conn, 1) != 0) {
		attempt_failed(c, PQerrorMessage(c->conn));
		return;
	}
	if (c->nhosts > 1 && c->last_up >= 0 && c->last_up != c->current) {
		char label[300];
		host_label(c, label, sizeof(label));
		log_info("database: connected to %s, host %d of %d in database_url%s%s%s", label,
			 c->current + 1, c->nhosts, c->failures.len ? " (passed over: " : "",
			 c->failures.len ? c->failures.data : "", c->failures.len ? ")" : "");
	}
	buf_free(&c->failures);
	c->warned = false;
	c->first = c->current;
	c->last_up = c->current;
	c->backoff_ms = BACKOFF_MIN_MS;
	pgc_set_state(c, PGC_IDLE);
	arm(c, EV_READ);
	if (*c->statement_timeout) {
		const char *ms[] = {c->statement_timeout};
		enqueue(c, true, "SELECT pg_catalog.set_config('statement_timeout', $1, false)", 1,
			ms, on_session_set, NULL);
	}
	enqueue(c, true, PGC_SESSION_SQL, 0, NULL, on_session_set, NULL);
	c->depth++;
	if (c->hooks.up)
		c->hooks.up(c, c->arg);
	c->depth--;
	if (c->state == PGC_IDLE)
		start_next(c);
}

static void poll_connect(struct pgc *c)
{
	switch (PQconnectPoll(c->conn)) {
	case PGRES_POLLING_READING:
		arm(c, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		arm(c, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		connected(c);
		break;
	default:
		attempt_failed(c, PQerrorMessage(c->conn));
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

/* The keyword/value arrays for a connection to conninfo; host overrides its hosts if given. */
static int connect_params(const char *conninfo, const struct pgc_host *host, const char **keys,
			  const char **vals)
{
	int n = 0;
	for (size_t i = 0; i < NDEFAULTS; i++) {
		if (defaults[i].envvar && getenv(defaults[i].envvar))
			continue;
		keys[n] = defaults[i].keyword;
		vals[n++] = defaults[i].value;
	}
	keys[n] = "dbname";
	vals[n++] = conninfo;
	if (host) {
		const char *what[] = {"host", "hostaddr", "port"};
		const char *value[] = {host->host, host->hostaddr, host->port};
		for (int i = 0; i < 3; i++) {
			if (!value[i])
				continue;
			keys[n] = what[i];
			vals[n++] = value[i];
		}
	}
	keys[n] = vals[n] = NULL;
	return n;
}

static void start_connect(struct pgc *c)
{
	const char *keys[NDEFAULTS + 5], *vals[NDEFAULTS + 5];
	connect_params(c->conninfo, c->nhosts > 1 ? &c->hosts[c->current] : NULL, keys, vals);
	c->conn = PQconnectStartParams(keys, vals, 1);
	if (!c->conn)
		fatal("pgc: out of memory starting a connection");
	PQsetNoticeReceiver(c->conn, on_notice, c);
	pgc_set_state(c, PGC_CONNECTING);
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		attempt_failed(c, PQerrorMessage(c->conn));
		return;
	}
	int timeout = connect_timeout_ms(c->conn);
	c->deadline = timeout > 0 ? clock_monotonic_ms() + timeout : 0;
	poll_connect(c);
}

/* A round over the hosts, from the one that worked last. */
static void start_round(struct pgc *c)
{
	c->round_start = clock_monotonic_ms();
	c->tried = 0;
	c->current = c->first;
	buf_free(&c->failures);
	start_connect(c);
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
	arm(c, r == 1 ? EV_READ | EV_WRITE : EV_READ);
	return true;
}

static void start_next(struct pgc *c)
{
	if (c->state != PGC_IDLE || STAILQ_EMPTY(&c->queue) || c->doomed)
		return;
	struct pgc_query *q = STAILQ_FIRST(&c->queue);
	int sent;
	if (q->tx)
		/*
		 * The statement, a flush request (the server sends the rows it
		 * has), then the sync point, where its implicit transaction
		 * commits: the caller sees the rows while the commit waits for
		 * the disk.
		 */
		sent = PQenterPipelineMode(c->conn) &&
		       PQsendQueryParams(c->conn, q->sql, q->nparams, NULL,
					 (const char *const *)q->params, NULL, NULL, 0) &&
		       PQsendFlushRequest(c->conn) && PQpipelineSync(c->conn);
	else if (q->nparams == 0)
		sent = PQsendQuery(c->conn, q->sql);
	else
		sent = PQsendQueryParams(c->conn, q->sql, q->nparams, NULL,
					 (const char *const *)q->params, NULL, NULL, 0);
	if (!sent) {
		go_down(c, PQerrorMessage(c->conn));
		return;
	}
	pgc_set_state(c, PGC_BUSY);
	c->deadline = q->timeout_ms > 0 ? clock_monotonic_ms() + q->timeout_ms : 0;
	flush(c);
}

/*
 * An answer that says this server cannot serve us any more: it is
 * read-only (a standby, or a primary demoted under us), or shutting down.
 * The connection is dropped so that the next host is tried, and the query
 * answered as lost, which callers retry, rather than as failed.
 */
static bool server_unusable(const PGresult *res)
{
	const char *state = pgc_sqlstate(res);
	return strcmp(state, "25006") == 0	 /* read_only_sql_transaction */
	       || strncmp(state, "57P0", 4) == 0 /* admin, crash shutdown; cannot connect now */
	       || strncmp(state, "08", 2) == 0;	 /* connection exception */
}

enum pipeline_step { PIPELINE_MORE, PIPELINE_DONE, PIPELINE_GONE };

/*
 * One result of a pgc_query_tx() pipeline (NULL after the statement's):
 * the statement's, or a failure, of the statement or of the commit at the
 * sync point. The kept result is the statement's, unless one failed: then
 * the first failure.
 */
static enum pipeline_step pipeline_result(struct pgc *c, struct pgc_query *q, PGresult *res)
{
	if (!res)
		return PIPELINE_MORE;
	if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
		/* The commit is over: the pipeline's last result. */
		PQclear(res);
		if (!PQexitPipelineMode(c->conn)) {
			go_down(c, PQerrorMessage(c->conn));
			return PIPELINE_GONE;
		}
		return PIPELINE_DONE;
	}
	if (c->result && !pgc_ok(c->result)) {
		PQclear(res);
	} else if (!pgc_ok(res)) {
		if (c->result)
			PQclear(c->result);
		c->result = res;
	} else if (!c->result) {
		/* The statement's: before its commit. */
		c->result = res;
		if (q->early) {
			c->depth++;
			q->early(c, res, q->arg);
			c->depth--;
			if (c->doomed || !c->conn)
				return PIPELINE_GONE;
		}
	} else {
		PQclear(res);
	}
	return PIPELINE_MORE;
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
		struct pgc_query *q = STAILQ_FIRST(&c->queue);
		if (q->tx) {
			switch (pipeline_result(c, q, res)) {
			case PIPELINE_MORE:
				continue;
			case PIPELINE_GONE:
				return;
			case PIPELINE_DONE:
				break;
			}
			res = NULL; /* the query's results are all in: finish it below */
		}
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
		if (res && server_unusable(res)) {
			char why[512];
			snprintf(why, sizeof(why), "%s (SQLSTATE %s)", pgc_error(res),
				 pgc_sqlstate(res));
			PQclear(res);
			go_down(c, why);
			return;
		}
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
		arm(c, EV_READ);
}

static void hosts_free(struct pgc *c)
{
	for (int i = 0; i < c->nhosts; i++) {
		free(c->hosts[i].host);
		free(c->hosts[i].hostaddr);
		free(c->hosts[i].port);
	}
	free(c->hosts);
	c->hosts = NULL;
	c->nhosts = 0;
}

static void really_free(struct pgc *c)
{
	close_conn(c); /* before the events go: it takes the socket's out of the loop */
	event_free(c->io);
	event_free(c->timer);
	while (!STAILQ_EMPTY(&c->queue))
		query_free(pop(c));
	hosts_free(c);
	buf_free(&c->failures);
	free(c->conninfo);
	free(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct pgc *c = arg;
	char why[128];
	c->depth++;
	switch (c->state) {
	case PGC_CONNECTING:
		if (what & EV_TIMEOUT)
			attempt_failed(c, "timed out connecting (connect_timeout)");
		else
			poll_connect(c);
		break;
	case PGC_BUSY:
		if (what & EV_TIMEOUT) {
			snprintf(why, sizeof(why), "no answer to a query within %d ms (db_timeout)",
				 STAILQ_FIRST(&c->queue)->timeout_ms);
			go_down(c, why);
			break;
		}
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
		start_round(c);
	c->depth--;
	if (c->doomed && c->depth == 0)
		really_free(c);
}

/*
 * Splits a comma-separated libpq list into owned strings. An empty entry
 * is empty_as when that is given (libpq's default for an empty port,
 * which a URI without one makes: postgresql://db1,db2:5433/x has the
 * ports ",5433"), else -1.
 */
static int split_list(const char *s, const char *empty_as, char ***out)
{
	int n = 0;
	char **items = NULL;
	for (const char *p = s;; p++) {
		size_t len = strcspn(p, ",");
		items = xrealloc(items, (size_t)(n + 1) * sizeof(*items));
		if (len == 0 && empty_as) {
			items[n++] = xstrdup(empty_as);
		} else {
			items[n] = xmalloc(len + 1);
			memcpy(items[n], p, len);
			items[n++][len] = '\0';
		}
		if (len == 0 && !empty_as) {
			while (n > 0)
				free(items[--n]);
			free(items);
			return -1;
		}
		p += len;
		if (*p == '\0')
			break;
	}
	*out = items;
	return n;
}

/* A string with neither '=' nor a URI prefix is a database name. */
static bool is_conninfo_string(const char *conninfo)
{
	return strchr(conninfo, '=') || strncmp(conninfo, "postgresql://", 13) == 0 ||
	       strncmp(conninfo, "postgres://", 11) == 0;
}

/* Whether v is a whole number from lo to hi as libpq reads one (parse_int_param:
 * strtol's, blanks around it, an int). */
static bool integer_in(const char *v, long lo, long hi)
{
	char *end;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (end == v || errno != 0 || n != (int)n)
		return false;
	while (isspace((unsigned char)*end))
		end++;
	return *end == '\0' && n >= lo && n <= hi;
}

/* Whether v is one of the words of list (separated by '|'). */
static bool one_of(const char *v, const char *list)
{
	size_t len = strlen(v);
	for (const char *w = list; *w;) {
		size_t wl = strcspn(w, "|");
		if (wl == len && strncmp(w, v, len) == 0)
			return true;
		w += wl + (w[wl] == '|');
	}
	return false;
}

/*
 * The options whose values libpq checks only as it connects: a value it
 * refuses then stops every connection before any host is tried, which a
 * daemon would take for a database away and try again forever. Their
 * values are not secrets (the password is none of them).
 */
static const char *option_problem(const PQconninfoOption *o, char *why, size_t whylen)
{
	static const struct {
		const char *key, *words;
	} words[] = {
		{"sslmode", "disable|allow|prefer|require|verify-ca|verify-full"},
		{"gssencmode", "disable|prefer|require"},
		{"channel_binding", "disable|prefer|require"},
		{"target_session_attrs", "any|read-write|read-only|primary|standby|prefer-standby"},
	};
	static const char *const integers[] = {"connect_timeout",  "keepalives",
					       "keepalives_idle",  "keepalives_interval",
					       "keepalives_count", "tcp_user_timeout"};
	if (!o->val)
		return NULL;
	char shown[64];
	snprintf(shown, sizeof(shown), "%s", o->val);
	text_printable(shown);
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(o->keyword, words[i].key) == 0 && !one_of(o->val, words[i].words)) {
			snprintf(why, whylen, "%s: '%s' is not one of %s", o->keyword, shown,
				 words[i].words);
			return why;
		}
	for (size_t i = 0; i < sizeof(integers) / sizeof(integers[0]); i++)
		if (strcmp(o->keyword, integers[i]) == 0 && !integer_in(o->val, INT_MIN, INT_MAX)) {
			snprintf(why, whylen, "%s: '%s' is not a whole number", o->keyword, shown);
			return why;
		}
	if (strcmp(o->keyword, "port") == 0) {
		/* One port, or one per host; an empty one is the default port. */
		for (const char *p = o->val;; p++) {
			size_t len = strcspn(p, ",");
			char port[16];
			if (len >= sizeof(port) ||
			    (len && (snprintf(port, sizeof(port), "%.*s", (int)len, p),
				     !integer_in(port, 1, 65535)))) {
				snprintf(why, whylen,
					 "port: '%s' is not a port from 1 to 65535 (or one "
					 "per host, separated by commas)",
					 shown);
				return why;
			}
			p += len;
			if (!*p)
				break;
		}
	}
	return NULL;
}

const char *pgc_conninfo_problem(const char *conninfo, char *why, size_t whylen)
{
	if (!is_conninfo_string(conninfo)) {
		/* libpq would take it for a database name, and say nothing of it. */
		if (strstr(conninfo, "://"))
			return "not a URL libpq reads: it begins with postgresql:// or postgres:// "
			       "(in lower case, with nothing before it)";
		return NULL;
	}
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	if (!opts)
		return "libpq cannot read it: check its quoting and percent-encoding (a '%' in "
		       "a URL's password is written %25); libpq's message is not shown, as it may "
		       "quote the password";
	const char *problem = NULL;
	for (const PQconninfoOption *o = opts; o->keyword && !problem; o++)
		problem = option_problem(o, why, whylen);
	PQconninfoFree(opts);
	return problem;
}

/*
 * Splits the hosts of conninfo (host, hostaddr and port lists, each from
 * the string or else from its environment variable) into c->hosts when
 * there are several. Anything libpq would refuse (lists of different
 * lengths, an empty host) is left to libpq, which says why. Hosts named by
 * a service file (service=, PGSERVICE) are not seen here: libpq walks them
 * within one attempt, under one connect_timeout (README says so).
 */
static void hosts_init(struct pgc *c)
{
	static const char *const keys[] = {"host", "hostaddr", "port"};
	static const char *const envs[] = {"PGHOST", "PGHOSTADDR", "PGPORT"};
	char *value[3] = {NULL, NULL, NULL};
	char **list[3] = {NULL, NULL, NULL};
	int count[3] = {0, 0, 0};
	int n = 0;

	PQconninfoOption *opts =
		is_conninfo_string(c->conninfo) ? PQconninfoParse(c->conninfo, NULL) : NULL;
	for (int k = 0; k < 3; k++) {
		for (PQconninfoOption *o = opts; o && o->keyword; o++)
			if (strcmp(o->keyword, keys[k]) == 0 && o->val && *o->val)
				value[k] = o->val;
		if (!value[k])
			value[k] = getenv(envs[k]);
		if (value[k] && *value[k]) {
			count[k] = split_list(value[k], k == 2 ? DEF_PGPORT_STR : NULL, &list[k]);
			if (count[k] < 0)
				goto done;
		}
	}
	n = count[0] > count[1] ? count[0] : count[1];
	if (n < 2 || (count[0] && count[1] && count[0] != count[1]) ||
	    (count[2] > 1 && count[2] != n))
		goto done;
	c->hosts = xcalloc((size_t)n, sizeof(*c->hosts));
	c->nhosts = n;
	for (int i = 0; i < n; i++) {
		struct pgc_host *h = &c->hosts[i];
		h->host = count[0] ? xstrdup(list[0][i]) : NULL;
		h->hostaddr = count[1] ? xstrdup(list[1][i]) : NULL;
		h->port = count[2] ? xstrdup(list[2][count[2] > 1 ? i : 0]) : NULL;
	}
done:
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i < count[k]; i++)
			free(list[k][i]);
		free(list[k]);
	}
	PQconninfoFree(opts);
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
	c->last_up = -1;
	c->failures = (struct buf)BUF_INIT;
	hosts_init(c);
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

void pgc_set_query_timeout(struct pgc *c, int ms)
{
	c->query_timeout_ms = ms > 0 ? ms : 0;
}

void pgc_set_statement_timeout(struct pgc *c, int ms)
{
	if (ms > 0)
		snprintf(c->statement_timeout, sizeof(c->statement_timeout), "%d", ms);
	else
		c->statement_timeout[0] = '\0';
}

int pgc_query_timeout(const struct pgc *c)
{
	return c->query_timeout_ms;
}

/* Queues a query last, or first (before what is queued, not sent yet). */
static struct pgc_query *enqueue(struct pgc *c, bool first, const char *sql, int nparams,
				 const char *const *params, pgc_result_fn fn, void *arg)
{
	struct pgc_query *q = xcalloc(1, sizeof(*q));
	q->sql = xstrdup(sql);
	q->nparams = nparams;
	if (nparams > 0) {
		q->params = xcalloc((size_t)nparams, sizeof(char *));
		for (int i = 0; i < nparams; i++)
			q->params[i] = params[i] ? xstrdup(params[i]) : NULL;
	}
	q->timeout_ms = c->query_timeout_ms;
	q->fn = fn;
	q->arg = arg;
	if (first)
		STAILQ_INSERT_HEAD(&c->queue, q, link);
	else
		STAILQ_INSERT_TAIL(&c->queue, q, link);
	c->queued++;
	return q;
}

void pgc_query(struct pgc *c, const char *sql, int nparams, const char *const *params,
	       pgc_result_fn fn, void *arg)
{
	enqueue(c, false, sql, nparams, params, fn, arg);
	if (c->state == PGC_IDLE)
		start_next(c);
}

void pgc_query_tx(struct pgc *c, const char *sql, int nparams, const char *const *params,
		  pgc_result_fn early, pgc_result_fn fn, void *arg)
{
	struct pgc_query *q = enqueue(c, false, sql, nparams, params, fn, arg);
	q->tx = true;
	q->early = early;
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
	c->reset = true;
	go_down(c, why);
	c->reset = false;
	c->depth--;
	if (c->doomed && c->depth == 0)
		really_free(c);
}

PGconn *pgc_connectdb(const char *conninfo)
{
	const char *keys[NDEFAULTS + 5], *vals[NDEFAULTS + 5];
	connect_params(conninfo, NULL, keys, vals);
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	if (!conn)
		fatal("out of memory connecting to the database");
	return conn;
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
