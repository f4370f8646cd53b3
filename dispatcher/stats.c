/*
 * stats: see stats.h. Every family is declared in stats_new(), in the
 * order a scrape lists them; the README's Operations section describes
 * the same list.
 */
#include "stats.h"
#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE_REFRESH_MS 5000 /* how often the queue depth is counted in PostgreSQL, at most */
/*
 * The count walks every pending delivery: a quarter of a second of a core
 * for a million waiting (tests/bench/backlog.py). It takes at most 1/20 of
 * the time: the next waits 20 times as long as the last took.
 */
#define QUEUE_COUNT_SHARE 20

/*
 * Both gauges in one pass over the partial index of pending deliveries,
 * which holds next_attempt_at (an index-only scan), so a large history
 * costs nothing; two counts walked it twice.
 */
static const char queue_sql[] = "SELECT count(*), count(*) FILTER (WHERE next_attempt_at <= now())"
				" FROM reghook.deliveries WHERE status = 'pending'";

static const char *const event_outcomes[] = {"accepted", "duplicate", "ignored", "rejected",
					     "unrouted"};
/* The daemon's database connections, as reghook_database_errors_total names them. */
static const char *const db_connections[] = {"receiver", "claim", "record", "control"};
static const char *const error_classes[] = {"none", "http",    "dns",	  "connect",
					    "tls",  "timeout", "blocked", "other"};
/* Seconds: from a fast local hook to the default request timeout and beyond. */
static const double duration_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
					  1,	 2.5,  5,     10,   30,	 60};

struct stats {
	struct daemon *d;	    /* borrowed */
	struct metrics *reg;	    /* owned */
	struct event *refresh;	    /* owned: the queue depth timer */
	bool refreshing;	    /* a queue count is running */
	long long count_started_ms; /* CLOCK_MONOTONIC, of the last queue count */
	long long next_count_ms;    /* no queue count before this */

	struct metrics_family *events, *deliveries, *attempts, *http, *reloads, *db_errors;
	struct metrics_series *duration;
	struct metrics_series *in_flight, *pending, *due, *queue_time, *queued, *storing;
	struct metrics_series *database_up, *last_reload_ok;
};

static const char *const outcome_label[] = {"outcome", NULL};

static struct metrics_series *one(struct metrics_family *f, const char *value)
{
	const char *values[] = {value};
	return metrics_series(f, values);
}

static struct metrics_series *gauge(struct stats *s, const char *name, const char *help)
{
	return metrics_single(metrics_family(s->reg, METRICS_GAUGE, name, help, NULL, NULL, 0));
}

static struct metrics_series *db_errors(struct stats *s, const char *connection, bool lost)
{
	const char *values[] = {connection, lost ? "lost" : "refused"};
	return metrics_series(s->db_errors, values);
}

static void on_counted(struct pgc *c, PGresult *res, void *arg)
{
	struct stats *s = arg;
	s->refreshing = false;
	s->next_count_ms = s->count_started_ms +
			   (clock_monotonic_ms() - s->count_started_ms) * QUEUE_COUNT_SHARE;
	if (!pgc_ok(res) || PQntuples(res) != 1) {
		if (res)
			log_warn("counting the delivery queue: %s", pgc_error(res));
		return;
	}
	metrics_set(s->pending, atof(PQgetvalue(res, 0, 0)));
	metrics_set(s->due, atof(PQgetvalue(res, 0, 1)));
	metrics_set(s->queue_time, (double)time(NULL));
}

static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
	struct stats *s = arg;
	if (s->refreshing || s->d->stopping || !s->d->schema_ok || !pgc_is_up(s->d->control) ||
	    clock_monotonic_ms() < s->next_count_ms)
		return;
	s->refreshing = true;
	s->count_started_ms = clock_monotonic_ms();
	pgc_query(s->d->control, queue_sql, 0, NULL, on_counted, s);
}

struct stats *stats_new(struct daemon *d)
{
	struct stats *s = xcalloc(1, sizeof(*s));
	s->d = d;
	s->reg = metrics_new();
	struct metrics *m = s->reg;

	s->events = metrics_family(m, METRICS_COUNTER, "reghook_events_total",
				   "Registry events received on POST /events, by outcome: accepted "
				   "(stored), duplicate, ignored (blob, pull, mount), rejected (a "
				   "namespace the registry's token does not cover), unrouted (no "
				   "registered namespace).",
				   outcome_label, NULL, 0);
	for (size_t i = 0; i < sizeof(event_outcomes) / sizeof(event_outcomes[0]); i++)
		one(s->events, event_outcomes[i]);

	s->deliveries = metrics_family(
		m, METRICS_COUNTER, "reghook_deliveries_total",
		"Delivery attempts made by this instance, by what they did to their delivery: "
		"succeeded, retried (scheduled again) or failed (attempts exhausted, 410, or "
		"not sendable).",
		outcome_label, NULL, 0);
	one(s->deliveries, "succeeded");
	one(s->deliveries, "retried");
	one(s->deliveries, "failed");

	static const char *const class_label[] = {"error", NULL};
	s->attempts = metrics_family(m, METRICS_COUNTER, "reghook_delivery_attempts_total",
				     "Delivery attempts made by this instance, by failure class "
				     "(none for a 2xx answer).",
				     class_label, NULL, 0);
	for (size_t i = 0; i < sizeof(error_classes) / sizeof(error_classes[0]); i++)
		one(s->attempts, error_classes[i]);

	s->duration = metrics_single(metrics_family(
		m, METRICS_HISTOGRAM, "reghook_delivery_duration_seconds",
		"Time from the start of a delivery request to its answer or failure.", NULL,
		duration_buckets, sizeof(duration_buckets) / sizeof(duration_buckets[0])));

	s->in_flight = gauge(s, "reghook_deliveries_in_flight",
			     "Delivery requests running now in this instance.");
	s->queued = gauge(s, "reghook_events_queued",
			  "Events received and waiting for a database connection to store them.");
	s->storing =
		gauge(s, "reghook_events_storing",
		      "Events in batches being stored now (their requests wait for the commit).");
	s->pending = gauge(s, "reghook_deliveries_pending",
			   "Deliveries waiting in the database (all instances), due or not; "
			   "counted every 5 seconds.");
	s->due = gauge(s, "reghook_deliveries_due",
		       "Pending deliveries whose time has come: the backlog; counted every 5 "
		       "seconds.");
	s->queue_time = gauge(s, "reghook_queue_counted_timestamp_seconds",
			      "When the queue gauges were last counted (Unix time; 0: never).");

	static const char *const http_labels[] = {"route", "method", "code", NULL};
	s->http = metrics_family(m, METRICS_COUNTER, "reghook_http_requests_total",
				 "HTTP requests answered, by route, method and status code.",
				 http_labels, NULL, 0);

	s->database_up = gauge(s, "reghook_database_up",
			       "1 when the database is connected and the schema current, else 0.");
	static const char *const db_labels[] = {"connection", "kind", NULL};
	s->db_errors = metrics_family(
		m, METRICS_COUNTER, "reghook_database_errors_total",
		"Database failures, by connection (receiver, claim, record, control) and kind: "
		"refused (a statement answered with an error) or lost (the connection dropped "
		"while up).",
		db_labels, NULL, 0);
	for (size_t i = 0; i < sizeof(db_connections) / sizeof(db_connections[0]); i++)
		for (int lost = 0; lost <= 1; lost++)
			db_errors(s, db_connections[i], lost);

	static const char *const result_label[] = {"result", NULL};
	s->reloads = metrics_family(m, METRICS_COUNTER, "reghook_config_reloads_total",
				    "Configuration reloads (SIGHUP), by result: success or failure "
				    "(the running configuration was kept).",
				    result_label, NULL, 0);
	one(s->reloads, "success");
	one(s->reloads, "failure");
	s->last_reload_ok = gauge(s, "reghook_config_last_reload_successful",
				  "0 when the last reload was refused, else 1.");
	metrics_set(s->last_reload_ok, 1);

	metrics_set(
		gauge(s, "reghook_start_time_seconds", "When this process started (Unix time)."),
		(double)time(NULL));
	static const char *const version_label[] = {"version", NULL};
	metrics_set(one(metrics_family(m, METRICS_GAUGE, "reghook_build_info",
				       "Always 1; the version of this reghook as a label.",
				       version_label, NULL, 0),
			REGHOOK_VERSION),
		    1);

	s->refresh = event_new(d->base, -1, EV_PERSIST, on_refresh, s);
	struct timeval every = {QUEUE_REFRESH_MS / 1000, (QUEUE_REFRESH_MS % 1000) * 1000};
	event_add(s->refresh, &every);
	return s;
}

void stats_free(struct stats *s)
{
	if (!s)
		return;
	event_free(s->refresh);
	metrics_free(s->reg);
	free(s);
}

void stats_events(struct stats *s, const char *outcome, int n)
{
	if (n > 0)
		metrics_add(one(s->events, outcome), n);
}

void stats_attempt(struct stats *s, const char *outcome, const char *error_class, double seconds)
{
	const char *what = strcmp(outcome, "succeeded") == 0 ? "succeeded"
			   : strcmp(outcome, "retry") == 0   ? "retried"
							     : "failed";
	metrics_add(one(s->deliveries, what), 1);
	metrics_add(one(s->attempts, error_class ? error_class : "none"), 1);
	metrics_observe(s->duration, seconds);
}

void stats_database_failure(struct stats *s, const char *connection, bool lost)
{
	metrics_add(db_errors(s, connection, lost), 1);
}

void stats_in_flight(struct stats *s, int n)
{
	metrics_set(s->in_flight, n);
}

void stats_ingest_queue(struct stats *s, int queued, int storing)
{
	metrics_set(s->queued, queued);
	metrics_set(s->storing, storing);
}

void stats_http(struct stats *s, const char *route, const char *method, int code)
{
	char status[16];
	snprintf(status, sizeof(status), "%d", code);
	const char *values[] = {route, method, status};
	metrics_add(metrics_series(s->http, values), 1);
}

void stats_reload(struct stats *s, bool ok)
{
	metrics_add(one(s->reloads, ok ? "success" : "failure"), 1);
	metrics_set(s->last_reload_ok, ok ? 1 : 0);
}

void stats_write(struct stats *s, struct buf *out)
{
	metrics_set(s->database_up, pgc_is_up(s->d->control) && s->d->schema_ok ? 1 : 0);
	metrics_write(s->reg, out);
}
