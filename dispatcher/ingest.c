/*
 * ingest: see ingest.h.
 *
 * DESIGN. A request becomes an ingest_req holding its parsed envelope; the
 * ones with events to store queue on `pending`. flush(), run after the
 * loop's current callbacks (flush_ev) and when a batch ends, hands the
 * queue, up to BATCH_MAX events, to an idle pool connection, as
 * batch_wait_ms() allows. A batch that fails
 * because the connection died is answered 503 (the registry retries, and
 * the event ids make the retry harmless if the commit did happen). A batch
 * that fails with an SQL error is split: each request is retried alone, so
 * one bad event can fail only its own request (400), never its neighbours.
 */
#include "ingest.h"
#include "buf.h"
#include "daemon.h"
#include "envelope.h"
#include "httpd.h"
#include "log.h"
#include "sources.h"
#include "stats.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BATCH_MAX 1000	     /* events per statement */
#define PENDING_MAX 20000    /* events queued before new requests get 503 */
#define RETRY_AFTER_DOWN "5" /* seconds, while the database is unreachable */
#define RETRY_AFTER_BUSY "1"
#define BATCH_SLOW_MS 20 /* a batch running longer holds back no other */

struct ingest_req {
	struct ingest_req *next;
	struct httpd_req *req; /* borrowed until answered */
	struct envelope env;   /* owned */
	long long source_id;
	char source[64];
	bool alone; /* retry in a batch of its own */
	int stored; /* events sent to the database */
	int accepted, duplicates, ignored, rejected;
};

struct ingest_conn {
	struct ingest *in;
	struct pgc *pgc; /* owned */
	bool busy;	 /* a batch is running on it */
	int events;	 /* in that batch */
	struct timespec started;
};

struct ingest_batch {
	struct ingest_conn *conn;
	struct ingest_req *reqs; /* owned list */
	int nreqs;
	/* For each element i of the batch: its request and event. */
	struct ingest_req **owner;
	const struct reg_event **item; /* borrowed from the owner's envelope */
	int nitems;
};

struct ingest {
	struct daemon *d;
	struct sources *sources; /* owned */
	struct ingest_conn *conns;
	int nconns;
	struct ingest_req *pending_head, *pending_tail; /* owned */
	int pending_events;
	int in_batches;		/* requests inside running batches */
	struct event *flush_ev; /* owned: flush() once the loop's current callbacks ran */
	struct event *slow_ev;	/* owned: flush() when a running batch turns slow */
};

static void flush(struct ingest *in);

static const char *const media_types[] = {
	"application/vnd.docker.distribution.events.v1+json",
	"application/vnd.docker.distribution.events.v2+json",
	"application/json",
};

static void req_free(struct ingest_req *r)
{
	envelope_free(&r->env);
	free(r);
}

static void reply_counts(struct ingest *in, struct ingest_req *r)
{
	char body[160];
	int ignored = 0; /* by kind (blob, pull, mount); the database counted the rest */
	for (size_t i = 0; i < r->env.count; i++)
		ignored += r->env.events[i].kind == EVENT_IGNORED;
	stats_events(in->d->stats, "ignored", ignored);
	snprintf(body, sizeof(body),
		 "{\"accepted\":%d,\"duplicates\":%d,\"ignored\":%d,\"rejected\":%d}", r->accepted,
		 r->duplicates, r->ignored, r->rejected);
	httpd_reply_json(r->req, 200, body);
}

static void reply_unavailable(struct httpd_req *req, const char *retry_after, const char *why)
{
	httpd_add_header(req, "Retry-After", retry_after);
	httpd_reply_error(req, 503, why);
}

static bool ready(const struct ingest *in)
{
	if (!in->d->schema_ok || !sources_ready(in->sources))
		return false;
	for (int i = 0; i < in->nconns; i++)
		if (pgc_is_up(in->conns[i].pgc))
			return true;
	return false;
}

static void enqueue(struct ingest *in, struct ingest_req *r, bool front)
{
	if (front) {
		r->next = in->pending_head;
		in->pending_head = r;
		if (!in->pending_tail)
			in->pending_tail = r;
	} else {
		r->next = NULL;
		if (in->pending_tail)
			in->pending_tail->next = r;
		else
			in->pending_head = r;
		in->pending_tail = r;
	}
	in->pending_events += r->stored;
}

static struct ingest_req *dequeue(struct ingest *in)
{
	struct ingest_req *r = in->pending_head;
	in->pending_head = r->next;
	if (!in->pending_head)
		in->pending_tail = NULL;
	in->pending_events -= r->stored;
	r->next = NULL;
	return r;
}

static void batch_free(struct ingest_batch *b)
{
	while (b->reqs) {
		struct ingest_req *r = b->reqs;
		b->reqs = r->next;
		req_free(r);
	}
	free(b->owner);
	free(b->item);
	free(b);
}

/* Answers every request of a batch that could not run: 503. */
static void fail_batch(struct ingest *in, struct ingest_batch *b, const char *why)
{
	for (struct ingest_req *r = b->reqs; r; r = r->next)
		reply_unavailable(r->req, RETRY_AFTER_DOWN, why);
	in->in_batches -= b->nreqs;
	batch_free(b);
}

/*
 * One info line per stored event, so the default log level shows what came
 * in. Every field was checked by envelope_parse(); %.*s bounds what a
 * registry can make us write.
 */
static void log_accepted(const struct ingest_req *r, const struct reg_event *ev)
{
	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	log_info("event accepted: %s %.256s%s%.128s from %s (event %.64s)",
		 ev->kind == EVENT_DELETE ? "delete" : "push", ev->repository, ev->tag ? ":" : "@",
		 ev->tag      ? ev->tag
		 : ev->digest ? ev->digest
			      : "?",
		 r->source, ev->id);
}

static void on_batch_done(struct pgc *c, PGresult *res, void *arg)
{
	struct ingest_batch *b = arg;
	struct ingest_conn *conn = b->conn;
	struct ingest *in = conn->in;

	conn->busy = false;
	conn->events = 0;
	if (!res) {
		log_warn("ingest: database connection lost during a batch of %d request(s)",
			 b->nreqs);
		fail_batch(in, b, "database unavailable; retry");
	} else if (!pgc_ok(res)) {
		const char *state = pgc_sqlstate(res);
		bool bad_data = strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0;
		if (b->nreqs > 1) {
			/* Find the culprit: every request again, alone, in order. */
			log_warn("ingest: batch of %d requests failed (%s); retrying each alone",
				 b->nreqs, pgc_error(res));
			struct ingest_req *rev = NULL;
			while (b->reqs) {
				struct ingest_req *r = b->reqs;
				b->reqs = r->next;
				r->next = rev;
				rev = r;
			}
			while (rev) {
				struct ingest_req *r = rev;
				rev = r->next;
				r->alone = true;
				enqueue(in, r, true);
			}
			in->in_batches -= b->nreqs;
			batch_free(b);
		} else if (bad_data) {
			struct ingest_req *r = b->reqs;
			log_warn("ingest: events from %s refused by the database: %s", r->source,
				 pgc_error(res));
			struct buf msg = BUF_INIT;
			buf_printf(&msg, "event refused: %s", pgc_error(res));
			httpd_reply_error(r->req, 400, msg.data);
			buf_free(&msg);
			in->in_batches -= b->nreqs;
			batch_free(b);
		} else {
			log_error("ingest: %s", pgc_error(res));
			fail_batch(in, b, "database error; retry");
		}
	} else {
		for (int row = 0; row < PQntuples(res); row++) {
			int i = atoi(PQgetvalue(res, row, 0));
			const char *outcome = PQgetvalue(res, row, 1);
			if (i < 0 || i >= b->nitems)
				continue;
			struct ingest_req *r = b->owner[i];
			stats_events(in->d->stats, outcome, 1);
			if (strcmp(outcome, "accepted") == 0) {
				r->accepted++;
				log_accepted(r, b->item[i]);
			} else if (strcmp(outcome, "duplicate") == 0) {
				r->duplicates++;
			} else if (strcmp(outcome, "rejected") == 0) {
				r->rejected++;
				log_warn(
					"ingest: registry %s may not post events for namespace %s: "
					"event rejected",
					r->source, PQgetvalue(res, row, 2));
			} else {
				r->ignored++; /* unrouted */
			}
		}
		for (struct ingest_req *r = b->reqs; r; r = r->next)
			reply_counts(in, r);
		in->in_batches -= b->nreqs;
		batch_free(b);
	}
	flush(in);
}

static void start_batch(struct ingest *in, struct ingest_conn *conn)
{
	struct ingest_batch *b = xcalloc(1, sizeof(*b));
	struct ingest_req **tail = &b->reqs;
	struct buf json = BUF_INIT;
	int cap = 0;

	b->conn = conn;
	buf_putc(&json, '[');
	while (in->pending_head) {
		struct ingest_req *r = in->pending_head;
		/* A request retried alone runs alone; a batch fills up to BATCH_MAX. */
		if (b->nreqs > 0 &&
		    (r->alone || b->reqs->alone || b->nitems + r->stored > BATCH_MAX))
			break;
		dequeue(in);
		*tail = r;
		tail = &r->next;
		b->nreqs++;
		for (size_t e = 0; e < r->env.count; e++) {
			const struct reg_event *ev = &r->env.events[e];
			if (ev->kind == EVENT_IGNORED)
				continue;
			if (b->nitems == cap) {
				cap = cap ? cap * 2 : 64;
				b->owner = xrealloc(b->owner, (size_t)cap * sizeof(*b->owner));
				b->item = xrealloc(b->item, (size_t)cap * sizeof(*b->item));
			}
			if (b->nitems)
				buf_putc(&json, ',');
			envelope_event_json(&json, ev, b->nitems, r->source_id);
			b->owner[b->nitems] = r;
			b->item[b->nitems++] = ev;
		}
	}
	buf_putc(&json, ']');
	in->in_batches += b->nreqs;
	conn->busy = true;
	conn->events = b->nitems;
	clock_gettime(CLOCK_MONOTONIC, &conn->started);
	const char *params[] = {json.data};
	pgc_query(conn->pgc, "SELECT i, outcome, namespace FROM reghook.ingest($1::jsonb)", 1,
		  params, on_batch_done, b);
	buf_free(&json);
}

/*
 * A batch costs the database nearly as much for a few events as for many,
 * so under load batches should be full. A batch starts on an idle
 * connection when none runs (no load: nobody waits for anybody), when the
 * queue holds at least as many events as the smallest running batch (the
 * load is such that a second batch is as full as the first), or when a
 * running batch has taken over BATCH_SLOW_MS (waiting for a lock, say),
 * which then holds back no other. Returns 0 to start now, else the
 * milliseconds after which a running batch turns slow.
 */
static long batch_wait_ms(const struct ingest *in)
{
	struct timespec now;
	int smallest = 0;
	long wait = 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	for (int i = 0; i < in->nconns; i++) {
		const struct ingest_conn *conn = &in->conns[i];
		if (!conn->busy)
			continue;
		long ran = (now.tv_sec - conn->started.tv_sec) * 1000 +
			   (now.tv_nsec - conn->started.tv_nsec) / 1000000;
		if (ran >= BATCH_SLOW_MS)
			return 0;
		if (wait == 0 || BATCH_SLOW_MS - ran < wait)
			wait = BATCH_SLOW_MS - ran;
		if (smallest == 0 || conn->events < smallest)
			smallest = conn->events;
	}
	if (smallest == 0 || in->pending_events >= smallest || in->pending_events >= BATCH_MAX)
		return 0;
	return wait;
}

static void flush(struct ingest *in)
{
	for (int i = 0; i < in->nconns && in->pending_head; i++) {
		struct ingest_conn *conn = &in->conns[i];
		if (conn->busy || !pgc_is_up(conn->pgc) || !in->d->schema_ok)
			continue;
		long wait = batch_wait_ms(in);
		if (wait > 0) {
			struct timeval tv = {0, wait * 1000};
			evtimer_add(in->slow_ev, &tv);
			break;
		}
		start_batch(in, conn);
	}
	/* Nothing can take the queue: tell the registries to come back. */
	if (in->pending_head && !ready(in)) {
		while (in->pending_head) {
			struct ingest_req *r = dequeue(in);
			reply_unavailable(r->req, RETRY_AFTER_DOWN, "database unavailable; retry");
			req_free(r);
		}
	}
}

static bool media_type_ok(const char *ct)
{
	if (!ct)
		return true; /* lenient: a registry always sends one */
	size_t len = strcspn(ct, ";");
	while (len > 0 && ct[len - 1] == ' ')
		len--;
	for (size_t i = 0; i < sizeof(media_types) / sizeof(media_types[0]); i++)
		if (strlen(media_types[i]) == len && strncasecmp(ct, media_types[i], len) == 0)
			return true;
	return false;
}

void ingest_handle(struct ingest *in, struct httpd_req *req)
{
	const char *auth = httpd_header(req, "Authorization");
	char err[512];
	long long source_id;
	const char *source_name;

	if (!ready(in)) {
		reply_unavailable(req, RETRY_AFTER_DOWN, "database unavailable; retry");
		return;
	}
	if (!sources_authenticate(in->sources, auth, &source_id, &source_name)) {
		log_info("ingest: POST /events with a %s token refused",
			 auth ? "wrong" : "missing");
		httpd_add_header(req, "WWW-Authenticate", "Bearer realm=\"reghook\"");
		httpd_reply_error(req, 401, auth ? "invalid token" : "missing bearer token");
		return;
	}
	if (!media_type_ok(httpd_header(req, "Content-Type"))) {
		httpd_reply_error(req, 415,
				  "Content-Type must be application/vnd.docker.distribution.events."
				  "v1+json, v2+json or application/json");
		return;
	}
	if (in->pending_events >= PENDING_MAX) {
		reply_unavailable(req, RETRY_AFTER_BUSY, "too many events waiting; retry");
		return;
	}

	size_t len;
	const char *data = httpd_body(req, &len);
	struct ingest_req *r = xcalloc(1, sizeof(*r));
	r->req = req;
	r->source_id = source_id;
	snprintf(r->source, sizeof(r->source), "%s", source_name);
	switch (envelope_parse(data, len, (size_t)in->d->cfg->max_events_per_envelope, &r->env, err,
			       sizeof(err))) {
	case ENVELOPE_OK:
		break;
	case ENVELOPE_TOO_MANY:
		httpd_reply_error(req, 413, err);
		req_free(r);
		return;
	case ENVELOPE_BAD:
		log_info("ingest: bad envelope from %s: %s", r->source, err);
		httpd_reply_error(req, 400, err);
		req_free(r);
		return;
	}
	for (size_t i = 0; i < r->env.count; i++) {
		if (r->env.events[i].kind == EVENT_IGNORED)
			r->ignored++;
		else
			r->stored++;
	}
	if (r->stored == 0) {
		reply_counts(in, r);
		req_free(r);
		return;
	}
	enqueue(in, r, false);
	/* Requests read in this turn of the loop join the same batch. */
	event_active(in->flush_ev, EV_TIMEOUT, 0);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	flush(arg);
}

static void conn_up(struct pgc *c, void *arg)
{
	struct ingest_conn *conn = arg;
	flush(conn->in);
}

static const struct pgc_hooks conn_hooks = {conn_up, NULL, NULL};

struct ingest *ingest_new(struct daemon *d)
{
	struct ingest *in = xcalloc(1, sizeof(*in));
	in->d = d;
	in->sources = sources_new();
	in->flush_ev = event_new(d->base, -1, 0, on_flush, in);
	in->slow_ev = evtimer_new(d->base, on_flush, in);
	in->nconns = (int)d->cfg->db_connections;
	in->conns = xcalloc((size_t)in->nconns, sizeof(*in->conns));
	for (int i = 0; i < in->nconns; i++) {
		in->conns[i].in = in;
		in->conns[i].pgc =
			pgc_new(d->base, d->cfg->database_url, &conn_hooks, &in->conns[i]);
		pgc_set_query_timeout(in->conns[i].pgc, (int)d->cfg->db_timeout_ms);
	}
	return in;
}

void ingest_free(struct ingest *in)
{
	if (!in)
		return;
	for (int i = 0; i < in->nconns; i++)
		pgc_free(in->conns[i].pgc);
	free(in->conns);
	event_free(in->flush_ev);
	event_free(in->slow_ev);
	while (in->pending_head)
		req_free(dequeue(in));
	sources_free(in->sources);
	free(in);
}

void ingest_schema_ready(struct ingest *in)
{
	sources_reload(in->sources, in->d->control);
	flush(in);
}

void ingest_sources_changed(struct ingest *in)
{
	if (pgc_is_up(in->d->control))
		sources_reload(in->sources, in->d->control);
}

int ingest_queued(const struct ingest *in)
{
	return in->pending_events;
}

int ingest_storing(const struct ingest *in)
{
	int n = 0;
	for (int i = 0; i < in->nconns; i++)
		n += in->conns[i].events;
	return n;
}

bool ingest_busy(const struct ingest *in)
{
	return in->pending_head || in->in_batches > 0;
}
