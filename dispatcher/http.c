/*
 * http: the HTTP routes of the daemon, as one const table. Every request
 * goes through route(), which finds the path, then the method (405 with an
 * Allow header when the path exists but the method does not), so that
 * unknown paths and methods get the same clear answers everywhere. Every
 * answer sent is counted for GET /metrics by route, method and status.
 */
#include "buf.h"
#include <stdlib.h>
#include "daemon.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "stats.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <string.h>
#include <yajl/yajl_tree.h>

struct route {
	const char *path; /* exact, or a prefix when it ends in '/' */
	enum evhttp_cmd_type method;
	void (*handle)(struct daemon *d, struct evhttp_request *req, const char *rest);
	const char *help;
};

void http_reply_json(struct evhttp_request *req, int status, const char *body)
{
	struct evbuffer *out = evbuffer_new();
	evbuffer_add(out, body, strlen(body));
	evbuffer_add(out, "\n", 1);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "application/json");
	evhttp_send_reply(req, status, NULL, out);
	evbuffer_free(out);
}

void http_reply_error(struct evhttp_request *req, int status, const char *message)
{
	struct buf b = BUF_INIT;
	buf_puts(&b, "{\"error\":");
	buf_json_str(&b, message, strlen(message));
	buf_puts(&b, "}");
	http_reply_json(req, status, b.data);
	buf_free(&b);
}

static void handle_healthz(struct daemon *d, struct evhttp_request *req, const char *rest)
{
	http_reply_json(req, 200, "{\"status\":\"ok\"}");
}

static void readyz_answer(struct pgc *c, PGresult *res, void *arg)
{
	struct evhttp_request *req = arg;
	if (pgc_ok(res) && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0)
		http_reply_json(req, 200, "{\"status\":\"ready\"}");
	else if (!res || !pgc_ok(res))
		http_reply_error(req, 503, "database not reachable");
	else
		http_reply_error(req, 503, "database schema not current");
}

static void handle_readyz(struct daemon *d, struct evhttp_request *req, const char *rest)
{
	if (!pgc_is_up(d->control)) {
		http_reply_error(req, 503, "database not reachable");
		return;
	}
	if (!d->schema_ok) {
		http_reply_error(req, 503, "database schema not current");
		return;
	}
	/* A live round trip: the connection may look up while the server is gone. */
	char version[16];
	snprintf(version, sizeof(version), "%d", migrate_latest_version());
	const char *params[] = {version};
	pgc_query(d->control, migrate_current_sql, 1, params, readyz_answer, req);
}

static void handle_events(struct daemon *d, struct evhttp_request *req, const char *rest)
{
	ingest_handle(d->ingest, req);
}

/* A callback body field: absent or null is NULL; anything but a string is an error. */
static bool callback_field(yajl_val tree, const char *name, const char **out)
{
	const char *path[] = {name, NULL};
	yajl_val v = yajl_tree_get(tree, path, yajl_t_any);
	*out = NULL;
	if (!v || YAJL_IS_NULL(v))
		return true;
	if (!YAJL_IS_STRING(v) || strlen(v->u.string) > 4096)
		return false;
	*out = v->u.string;
	return true;
}

static void callback_recorded(struct pgc *c, PGresult *res, void *arg)
{
	struct evhttp_request *req = arg;
	if (!pgc_ok(res)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
		http_reply_error(req, 503, "database unavailable; retry");
	} else if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		http_reply_error(req, 404, "unknown callback token");
	} else {
		http_reply_json(req, 200, "{\"status\":\"recorded\"}");
	}
}

static void handle_callback(struct daemon *d, struct evhttp_request *req, const char *token)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	char err[128];
	const char *state, *description, *context, *target_url;

	if (len == 0 || len > 65536) {
		http_reply_error(req, 400, len ? "body too large" : "empty body");
		return;
	}
	char *text = xstrndup((const char *)evbuffer_pullup(in, -1), len);
	yajl_val tree = strlen(text) == len ? yajl_tree_parse(text, err, sizeof(err)) : NULL;
	free(text);
	if (!tree || !YAJL_IS_OBJECT(tree)) {
		http_reply_error(req, 400, "body is not a JSON object");
	} else if (!callback_field(tree, "state", &state) || !state ||
		   (strcmp(state, "success") && strcmp(state, "failure") &&
		    strcmp(state, "error"))) {
		http_reply_error(req, 400, "state must be \"success\", \"failure\" or \"error\"");
	} else if (!callback_field(tree, "description", &description) ||
		   !callback_field(tree, "context", &context) ||
		   !callback_field(tree, "target_url", &target_url)) {
		http_reply_error(req, 400, "description, context and target_url must be strings");
	} else if (!pgc_is_up(d->control) || !d->schema_ok) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
		http_reply_error(req, 503, "database unavailable; retry");
	} else {
		const char *params[] = {token, state, description, context, target_url};
		pgc_query(d->control, "SELECT reghook.record_callback($1, $2, $3, $4, $5)", 5,
			  params, callback_recorded, req);
	}
	if (tree)
		yajl_tree_free(tree);
}

static void handle_metrics(struct daemon *d, struct evhttp_request *req, const char *rest)
{
	struct buf text = BUF_INIT;
	stats_write(d->stats, &text);
	struct evbuffer *out = evbuffer_new();
	evbuffer_add(out, text.data, text.len);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  METRICS_CONTENT_TYPE);
	evhttp_send_reply(req, 200, NULL, out);
	evbuffer_free(out);
	buf_free(&text);
}

static const struct route routes[] = {
	{"/callback/", EVHTTP_REQ_POST, handle_callback,
	 "Docker Hub callback: the endpoint reports state for the delivery named by the token"},
	{"/events", EVHTTP_REQ_POST, handle_events,
	 "registry notification envelopes; answered after their events are committed"},
	{"/healthz", EVHTTP_REQ_GET, handle_healthz, "200 while the process runs"},
	{"/healthz", EVHTTP_REQ_HEAD, handle_healthz, NULL},
	{"/readyz", EVHTTP_REQ_GET, handle_readyz,
	 "200 when the database is reachable and the schema current, else 503"},
	{"/readyz", EVHTTP_REQ_HEAD, handle_readyz, NULL},
	{"/metrics", EVHTTP_REQ_GET, handle_metrics,
	 "Prometheus text format: events, deliveries, attempts, queue, latency"},
	{"/metrics", EVHTTP_REQ_HEAD, handle_metrics, NULL},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static const char *method_name(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	default:
		return "OTHER";
	}
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

static const char *request_path(struct evhttp_request *req)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	return path && *path ? path : "/";
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

/* Runs when an answer has been written out. */
static void on_answered(struct evhttp_request *req, void *arg)
{
	struct daemon *d = arg;
	stats_http(d->stats, route_label(request_path(req)),
		   method_name(evhttp_request_get_command(req)),
		   evhttp_request_get_response_code(req));
}

static void route(struct evhttp_request *req, void *arg)
{
	struct daemon *d = arg;
	const char *path = request_path(req);
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	struct buf allow = BUF_INIT;
	const char *rest;

	evhttp_request_set_on_complete_cb(req, on_answered, d);
	log_debug("%s %s", method_name(method), path);
	if (d->stopping) {
		d->idle_ticks = 0; /* its answer is written before the exit */
		/*
		 * Only the listener is closed on SIGTERM: a registry's keep-alive
		 * connection could keep posting and hold the stop off forever. It
		 * is told to go elsewhere or come back, and the connection closes.
		 */
		struct evkeyvalq *out = evhttp_request_get_output_headers(req);
		evhttp_add_header(out, "Connection", "close");
		if (method == EVHTTP_REQ_POST) {
			evhttp_add_header(out, "Retry-After", "5");
			http_reply_error(req, 503, "reghook is stopping");
			return;
		}
	}
	for (size_t i = 0; i < NROUTES; i++) {
		if (!path_matches(&routes[i], path, &rest))
			continue;
		if (routes[i].method == method) {
			buf_free(&allow);
			routes[i].handle(d, req, rest);
			return;
		}
		if (!strstr(buf_cstr(&allow), method_name(routes[i].method)))
			buf_printf(&allow, "%s%s", allow.len ? ", " : "",
				   method_name(routes[i].method));
	}
	if (allow.len) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow.data);
		http_reply_error(req, 405, "method not allowed");
	} else {
		http_reply_error(req, 404, "not found");
	}
	buf_free(&allow);
}

bool http_routes_init(struct daemon *d)
{
	evhttp_set_gencb(d->http, route, d);
	evhttp_set_allowed_methods(d->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
						    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						    EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	http_reconfigure(d);
	/*
	 * A body over the limit is read and dropped before the 413 goes out:
	 * closing at once made the client's write fail, and it often saw a
	 * reset instead of the answer.
	 */
	evhttp_set_flags(d->http, EVHTTP_SERVER_LINGERING_CLOSE);
	evhttp_set_max_headers_size(d->http, 64 * 1024);
	/* A client that trickles its request is cut off, not waited for forever. */
	evhttp_set_timeout(d->http, 30);
	return true;
}

void http_reconfigure(struct daemon *d)
{
	evhttp_set_max_body_size(d->http, (ev_ssize_t)d->cfg->max_request_body);
}
