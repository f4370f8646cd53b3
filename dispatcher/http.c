/*
 * http: the HTTP routes of the daemon, as one const table. Every request
 * goes through route(), which finds the path, then the method (405 with an
 * Allow header when the path exists but the method does not), so that
 * unknown paths and methods get the same clear answers everywhere. Every
 * answer sent is counted for GET /metrics by route, method and status.
 */
#include "buf.h"
#include "callback.h"
#include "daemon.h"
#include "http.h"
#include "httpd.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "reply.h"
#include "stats.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define HTTP_FDS_SPARE 64	/* descriptors kept beside deliveries' and the database's */
#define HTTP_CONNECTIONS_MIN 16 /* the receiver's connections, however few descriptors */

struct route {
	const char *path; /* exact, or a prefix when it ends in '/' */
	const char *method;
	void (*handle)(struct daemon *d, struct httpd_req *req, const char *rest);
	const char *help;
};

static void handle_healthz(struct daemon *d, struct httpd_req *req, const char *rest)
{
	httpd_reply_json(req, 200, "{\"status\":\"ok\"}");
}

/*
 * How long a GET /readyz waits for the database's answer at most: a
 * database that hangs (a lock, a stopped server) would otherwise hold it
 * for db_timeout, past a probe's own timeout (Kubernetes': 1 s), which
 * then reads no answer rather than "not ready". Those waiting are answered
 * at each tick of this period while the query is out, so one that came
 * just after a tick waits the whole period: half of that timeout.
 */
#define READYZ_WAIT_MS 500
static const struct timeval readyz_wait = {READYZ_WAIT_MS / 1000, READYZ_WAIT_MS % 1000 * 1000};

static void readyz_reply_all(struct daemon *d, int status, const char *error)
{
	/* Taken whole first: an answer may start the next /readyz of its
	 * connection (pipelined), which waits for a query of its own. */
	struct httpd_req **waiting = d->readyz_waiting;
	size_t n = d->readyz_n;
	d->readyz_waiting = NULL;
	d->readyz_n = d->readyz_cap = 0;
	for (size_t i = 0; i < n; i++) {
		if (status == 200)
			httpd_reply_json(waiting[i], 200, "{\"status\":\"ready\"}");
		else
			httpd_reply_error(waiting[i], status, error);
	}
	free(waiting);
}

/* Every /readyz waiting gets the answer of the one query they waited for. */
static void readyz_answer(struct pgc *c, PGresult *res, void *arg)
{
	struct daemon *d = arg;
	d->readyz_asked = false;
	evtimer_del(d->readyz_timer);
	if (pgc_ok(res) && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0)
		readyz_reply_all(d, 200, NULL);
	else if (!res)
		readyz_reply_all(d, 503, "database not reachable");
	else if (!pgc_ok(res)) /* reached, and refused: a right revoked, say */
		readyz_reply_all(d, 503, "database refused the readiness query");
	else
		readyz_reply_all(d, 503, "database schema not current");
}

/* The query is out longer than a /readyz waits: those waiting are not
 * ready; those that come meanwhile wait for its answer or the next tick. */
static void readyz_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	readyz_reply_all(d, 503, "database did not answer the readiness query within 0.5 s");
	if (d->readyz_asked)
		evtimer_add(d->readyz_timer, &readyz_wait);
}

static void handle_readyz(struct daemon *d, struct httpd_req *req, const char *rest)
{
	if (!pgc_is_up(d->control)) {
		httpd_reply_error(req, 503, "database not reachable");
		return;
	}
	if (!d->schema_ok) {
		httpd_reply_error(req, 503, "database schema not current");
		return;
	}
	if (!ingest_check_ready(d->ingest)) {
		httpd_reply_error(req, 503, "receiver cannot store events yet");
		return;
	}
	/*
	 * A live round trip: the connection may look up while the server is
	 * gone. One at a time, answering all that came meanwhile: the control
	 * connection also records callbacks, which a client looping on /readyz
	 * would otherwise queue behind thousands of these (and, while the
	 * database hangs, behind one a second).
	 */
	if (d->readyz_n == d->readyz_cap) {
		d->readyz_cap = d->readyz_cap ? 2 * d->readyz_cap : 16;
		d->readyz_waiting =
			xrealloc(d->readyz_waiting, d->readyz_cap * sizeof(*d->readyz_waiting));
	}
	d->readyz_waiting[d->readyz_n++] = req;
	if (d->readyz_asked)
		return;
	if (!d->readyz_timer)
		d->readyz_timer = evtimer_new(d->base, readyz_tick, d);
	d->readyz_asked = true;
	evtimer_add(d->readyz_timer, &readyz_wait);
	char version[16];
	snprintf(version, sizeof(version), "%d", migrate_latest_version());
	const char *params[] = {version};
	pgc_query(d->control, migrate_current_sql, 1, params, readyz_answer, d);
}

static void handle_events(struct daemon *d, struct httpd_req *req, const char *rest)
{
	ingest_handle(d->ingest, req);
}

static void handle_metrics(struct daemon *d, struct httpd_req *req, const char *rest)
{
	struct buf text = BUF_INIT;
	stats_write(d->stats, &text);
	httpd_reply(req, 200, METRICS_CONTENT_TYPE, text.data, text.len);
	buf_free(&text);
}

static const struct route routes[] = {
	{"/callback/", "POST", callback_handle,
	 "Docker Hub callback: the endpoint reports state for the delivery named by the token"},
	{"/events", "POST", handle_events,
	 "registry notification envelopes; answered after their events are committed"},
	{"/healthz", "GET", handle_healthz, "200 while the process runs"},
	{"/healthz", "HEAD", handle_healthz, NULL},
	{"/readyz", "GET", handle_readyz,
	 "200 when the database is reachable and the schema current, else 503"},
	{"/readyz", "HEAD", handle_readyz, NULL},
	{"/metrics", "GET", handle_metrics,
	 "Prometheus text format: events, deliveries, attempts, queue, latency"},
	{"/metrics", "HEAD", handle_metrics, NULL},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* The method as a metrics label: the ones routed, or "OTHER" (bounded). */
static const char *method_label(const char *m)
{
	static const char *const known[] = {"GET", "POST", "HEAD", "PUT", "DELETE"};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(m, known[i]) == 0)
			return known[i];
	return "OTHER";
}

static bool path_matches(const struct route *r, const char *path, const char **rest)
{
	size_t n = strlen(r->path);
	if (r->path[n - 1] == '/') {
		if (strncmp(path, r->path, n) != 0 || path[n] == '\0')
			return false;
		*rest = path + n;
		return true;
	}
	*rest = "";
	return strcmp(path, r->path) == 0;
}

/* The route label of a request for metrics: the table's path, or "other" (bounded). */
static const char *route_label(const char *path)
{
	const char *rest;
	for (size_t i = 0; i < NROUTES; i++)
		if (path_matches(&routes[i], path, &rest))
			return routes[i].path;
	return "other";
}

/* Runs when an answer is queued, the HTTP layer's own errors included. */
static void on_answered(const struct httpd_req *req, int status, void *arg)
{
	struct daemon *d = arg;
	stats_http(d->stats, route_label(httpd_path(req)), method_label(httpd_method(req)), status);
}

static void route(struct httpd_req *req, void *arg)
{
	struct daemon *d = arg;
	const char *path = httpd_path(req);
	const char *method = httpd_method(req);
	struct buf allow = BUF_INIT;
	const char *rest;

	/* A callback's path holds its token, which no log line shows (README). */
	if (strncmp(path, "/callback/", strlen("/callback/")) == 0)
		log_debug("%s /callback/(token)", method);
	else
		log_debug("%s %s", method, path);
	if (d->stopping) {
		d->idle_ticks = 0; /* its answer is written before the exit */
		/*
		 * Only the listener is closed on SIGTERM: a registry's keep-alive
		 * connection could keep posting and hold the stop off forever. It
		 * is told to go elsewhere or come back, and the connection closes.
		 */
		httpd_close_after(req);
		if (strcmp(method, "POST") == 0) {
			reply_unavailable(req, REPLY_RETRY_DOWN, "reghook is stopping");
			return;
		}
	}
	for (size_t i = 0; i < NROUTES; i++) {
		if (!path_matches(&routes[i], path, &rest))
			continue;
		if (strcmp(routes[i].method, method) == 0) {
			buf_free(&allow);
			routes[i].handle(d, req, rest);
			return;
		}
		if (!strstr(buf_cstr(&allow), routes[i].method))
			buf_printf(&allow, "%s%s", allow.len ? ", " : "", routes[i].method);
	}
	if (allow.len) {
		httpd_add_header(req, "Allow", allow.data);
		httpd_reply_error(req, 405, "method not allowed");
	} else {
		httpd_reply_error(req, 404, "not found");
	}
	buf_free(&allow);
}

void http_init(struct daemon *d)
{
	d->http = httpd_new(d->base, route, on_answered, d);
	http_reconfigure(d);
}

/*
 * Connections the receiver keeps open at once: the file descriptors the
 * process may have, less what the deliveries (max_in_flight), the database
 * connections and the rest (logs, listeners, the event loop) may need.
 */
static int receiver_connections(const struct config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	long long room =
		(long long)rl.rlim_cur - cfg->max_in_flight - cfg->db_connections - HTTP_FDS_SPARE;
	return room < HTTP_CONNECTIONS_MIN ? HTTP_CONNECTIONS_MIN
	       : room > INT_MAX		   ? INT_MAX
					   : (int)room;
}

void http_reconfigure(struct daemon *d)
{
	httpd_configure(d->http, (size_t)d->cfg->max_request_body, d->cfg->client_timeout_ms);
	httpd_set_max_connections(d->http, receiver_connections(d->cfg));
	/* Deliveries may then take every descriptor, and the receiver starve. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (long long)rl.rlim_cur < d->cfg->max_in_flight + d->cfg->db_connections +
					     HTTP_FDS_SPARE + HTTP_CONNECTIONS_MIN)
		log_warn("the file descriptor limit (%lld) leaves too little beside max_in_flight "
			 "(%lld), db_connections (%lld) and %d more: raise it (ulimit -n, "
			 "LimitNOFILE) to %lld at least, or lower max_in_flight",
			 (long long)rl.rlim_cur, d->cfg->max_in_flight, d->cfg->db_connections,
			 HTTP_FDS_SPARE + HTTP_CONNECTIONS_MIN,
			 d->cfg->max_in_flight + d->cfg->db_connections + HTTP_FDS_SPARE +
				 HTTP_CONNECTIONS_MIN);
}
