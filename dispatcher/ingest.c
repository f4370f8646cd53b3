/*
 * ingest: see ingest.h.
 *
 * DESIGN. A request becomes an ingest_req holding its parsed envelope; the
 * ones with events to store queue on `pending`. flush(), run after the
 * loop's current callbacks (flush_ev) and when a batch ends, hands the
 * queue, up to INGEST_BATCH_MAX events, to an idle pool connection, as
 * ingest_batch_wait_ms() allows. A batch that fails because the connection
 * died is answered 503 (the registry retries, and the event ids make the
 * retry harmless if the commit did happen). A batch that fails with an SQL
 * error is split: each request is retried alone, so one bad event can fail
 * only its own request (400), never its neighbours. The decisions (when a
 * batch starts, which requests it takes, what a failure means) are pure
 * functions, declared in ingest.h for the unit tests.
 */
#include "ingest.h"
#include "buf.h"
#include "clock.h"
#include "daemon.h"
#include "delivery.h"
#include "envelope.h"
#include "httpd.h"
#include "log.h"
#include "reply.h"
#include "sources.h"
#include "stats.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#define PENDING_MAX 20000	      /* events queued before new requests get 503 */
#define PENDING_MAX_BYTES (64u << 20) /* or bytes of events queued */
#define RETRY_AFTER_BUSY "1"	      /* seconds, while the queue is full */
#define REFUSED_LOG_MS 10000	      /* a refused token is logged at most this often */
/* And so is a batch the database failed: while it refused every statement (a
 * full disk), each request's own try wrote a line, 860 in the second that 800
 * posts took. reghook_database_errors_total counts them all. */
#define DB_FAILED_LOG_MS 10000

struct ingest_req {
	STAILQ_ENTRY(ingest_req) link; /* in the queue, or in a batch */
	struct httpd_req *req;	       /* borrowed until answered */
	struct envelope env;	       /* owned */
	long long source_id;
	char source[64];
	bool alone;   /* retry in a batch of its own */
	int again;    /* times stored again after a foreign key violation (ingest.h) */
	int stored;   /* events sent to the database */
	size_t bytes; /* what those events hold (envelope.h) */
	int accepted, duplicates, ignored, rejected;
};

STAILQ_HEAD(ingest_req_list, ingest_req);

struct ingest_conn {
	struct ingest *in;
	struct pgc *pgc; /* owned */
	bool busy;	 /* a batch, or its warm-up, is running on it */
	bool warm;	 /* ingest() has run on it since it last came up */
	int events;	 /* in that batch */
	struct timespec started;
	long long warm_failed_ms; /* monotonic: its last warm-up failed then (0: none since it came
				     up) */
};

struct ingest_batch {
	struct ingest_conn *conn;
	struct ingest_req_list reqs; /* owned */
	int nreqs;
	/* For each element i of the batch: its request and event. */
	struct ingest_req **owner;
	const struct reg_event **item; /* borrowed from the owner's envelope */
	int nitems;
	struct delivery_offer offer; /* the engine's free slots it offers ingest(), if any */
	struct delivery_gate *gate;  /* what the deliveries it started wait behind */
};

struct ingest {
	struct daemon *d;
	struct sources *sources; /* owned */
	struct ingest_conn *conns;
	int nconns;
	struct ingest_running *running; /* owned: nconns long, scratch for batch_wait_ms() */
	struct ingest_req_list pending; /* owned: waiting for a batch, oldest first */
	int pending_events;
	size_t pending_bytes;
	int storing;		  /* events inside running batches */
	int in_batches;		  /* requests inside running batches */
	struct event *flush_ev;	  /* owned: flush() once the loop's current callbacks ran */
	struct event *slow_ev;	  /* owned: flush() when a running batch turns slow */
	struct log_quota refused; /* lines about refused tokens */
	struct log_quota failed;  /* lines about batches the database failed */
};

static void flush(struct ingest *in);

static const char *const media_types[] = {
	"application/vnd.docker.distribution.events.v1+json",
	"application/vnd.docker.distribution.events.v2+json",
	"application/json",
};

long ingest_batch_wait_ms(const struct ingest_running *running, int nrunning, int queued)
{
	int smallest = 0;
	long wait = 0;
	for (int i = 0; i < nrunning; i++) {
		long ran = running[i].ran_ms;
		if (ran >= INGEST_BATCH_SLOW_MS)
			return 0;
		if (wait == 0 || INGEST_BATCH_SLOW_MS - ran < wait)
			wait = INGEST_BATCH_SLOW_MS - ran;
		if (smallest == 0 || running[i].events < smallest)
			smallest = running[i].events;
	}
	if (nrunning == 0 || queued >= smallest || queued >= INGEST_BATCH_MAX)
		return 0;
	return wait;
}

bool ingest_batch_takes(int nreqs, bool batch_alone, int nitems, size_t bytes, bool req_alone,
			int req_events, size_t req_bytes)
{
	/* A request retried alone runs alone; a batch fills up to its limits. */
	return nreqs == 0 ||
	       (!batch_alone && !req_alone && nitems + req_events <= INGEST_BATCH_MAX &&
		bytes <= INGEST_BATCH_MAX_BYTES && req_bytes <= INGEST_BATCH_MAX_BYTES - bytes);
}

enum ingest_failure ingest_batch_failure(bool lost, const char *sqlstate, int nreqs, int again)
{
	if (lost)
		return INGEST_FAILURE_RETRY;
	if (strcmp(sqlstate, "23503") == 0)
		return nreqs > 1 || again < INGEST_AGAIN_MAX ? INGEST_FAILURE_SPLIT
							     : INGEST_FAILURE_RETRY;
	if (nreqs > 1)
		return INGEST_FAILURE_SPLIT;
	/* Data exceptions and integrity violations are the request's; the rest the database's. */
	if (strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0)
		return INGEST_FAILURE_REFUSED;
	return INGEST_FAILURE_RETRY;
}

static void req_free(struct ingest_req *r)
{
	envelope_free(&r->env);
	free(r);
}

static void answer_counts(struct ingest *in, struct ingest_req *r)
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

/* The gauges of GET /metrics follow the queue. */
static void publish(struct ingest *in)
{
	stats_ingest_queue(in->d->stats, in->pending_events, in->storing);
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

static void enqueue(struct ingest *in, struct ingest_req *r)
{
	STAILQ_INSERT_TAIL(&in->pending, r, link);
	in->pending_events += r->stored;
	in->pending_bytes += r->bytes;
	publish(in);
}

/* Puts a failed batch's requests back at the head of the queue, in order, each to run alone. */
static void requeue_alone(struct ingest *in, struct ingest_batch *b)
{
	struct ingest_req *r;
	STAILQ_FOREACH(r, &b->reqs, link) {
		if (b->nreqs == 1)
			r->again++;
		r->alone = true;
		in->pending_events += r->stored;
		in->pending_bytes += r->bytes;
	}
	STAILQ_CONCAT(&b->reqs, &in->pending);
	STAILQ_CONCAT(&in->pending, &b->reqs);
	publish(in);
}

static struct ingest_req *dequeue(struct ingest *in)
{
	struct ingest_req *r = STAILQ_FIRST(&in->pending);
	STAILQ_REMOVE_HEAD(&in->pending, link);
	in->pending_events -= r->stored;
	in->pending_bytes -= r->bytes;
	publish(in);
	return r;
}

static void batch_free(struct ingest_batch *b)
{
	struct ingest_req *r;
	while ((r = STAILQ_FIRST(&b->reqs))) {
		STAILQ_REMOVE_HEAD(&b->reqs, link);
		req_free(r);
	}
	free(b->owner);
	free(b->item);
	free(b);
}

/* Answers every request of a batch that could not run: 503. */
static void fail_batch(struct ingest *in, struct ingest_batch *b, const char *why)
{
	struct ingest_req *r;
	STAILQ_FOREACH(r, &b->reqs, link)
		reply_unavailable(r->req, REPLY_RETRY_DOWN, why);
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

/* ingest() ran on conn: the first such connection up makes the receiver ready (READY=1). */
static void became_warm(struct ingest_conn *conn)
{
	if (conn->warm)
		return;
	bool was_ready = false;
	for (int i = 0; i < conn->in->nconns; i++)
		was_ready |= conn->in->conns[i].warm && pgc_is_up(conn->in->conns[i].pgc);
	conn->warm = true;
	if (!was_ready)
		daemon_receiver_ready(conn->in->d);
}

/*
 * The batch's statement is done and its commit under way: what it handed
 * over starts now, while the commit waits for the disk (delivery.h says
 * what that means if the commit fails). The registry is answered when the
 * commit is confirmed (on_batch_done).
 */
static void on_batch_stored(struct pgc *c, PGresult *res, void *arg)
{
	struct ingest_batch *b = arg;
	if (b->offer.holder)
		b->gate = delivery_offer_done(b->conn->in->d->delivery, &b->offer, res);
}

static void on_batch_done(struct pgc *c, PGresult *res, void *arg)
{
	struct ingest_batch *b = arg;
	struct ingest_conn *conn = b->conn;
	struct ingest *in = conn->in;

	/* An offer not taken up above (the statement failed) is given back. */
	if (b->offer.holder)
		b->gate = delivery_offer_done(in->d->delivery, &b->offer, res);
	delivery_gate_open(in->d->delivery, b->gate, res != NULL);
	b->gate = NULL;
	conn->busy = false;
	in->storing -= conn->events;
	conn->events = 0;
	publish(in);
	if (!pgc_ok(res)) {
		const char *state = res ? pgc_sqlstate(res) : "";
		int again = STAILQ_FIRST(&b->reqs)->again;
		switch (ingest_batch_failure(!res, state, b->nreqs, again)) {
		case INGEST_FAILURE_SPLIT:
			/* Find the culprit: every request again, alone, in order. */
			if (strcmp(state, "23503") == 0)
				log_info("ingest: a namespace, webhook or registry source was "
					 "removed "
					 "while a batch of %d request(s) was stored (%s); storing "
					 "each again, alone",
					 b->nreqs, pgc_error(res));
			else
				log_limited(&in->failed, DB_FAILED_LOG_MS, LOG_LEVEL_WARN,
					    "ingest: batch of %d requests failed (%s); retrying "
					    "each alone",
					    b->nreqs, pgc_error(res));
			requeue_alone(in, b);
			in->in_batches -= b->nreqs;
			batch_free(b);
			break;
		case INGEST_FAILURE_REFUSED: {
			struct ingest_req *r = STAILQ_FIRST(&b->reqs);
			/* Not through the quota: each is an event dropped, named once, as
			 * each stored one is. */
			log_warn("ingest: events from %s refused by the database: %s", r->source,
				 pgc_error(res));
			reply_errorf(r->req, 400, "event refused: %s", pgc_error(res));
			in->in_batches -= b->nreqs;
			batch_free(b);
			break;
		}
		case INGEST_FAILURE_RETRY:
			if (!res) {
				log_warn("ingest: database connection lost during a batch of %d "
					 "request(s)",
					 b->nreqs);
				fail_batch(in, b, "database unavailable; retry");
			} else {
				log_limited(&in->failed, DB_FAILED_LOG_MS, LOG_LEVEL_ERROR,
					    "ingest: %s", pgc_error(res));
				fail_batch(in, b, "database error; retry");
			}
			break;
		}
	} else {
		became_warm(conn);
		bool *told = xcalloc((size_t)b->nitems + 1, sizeof(*told));
		for (int row = 0; row < PQntuples(res); row++) {
			if (PQgetisnull(res, row, 0))
				continue; /* a delivery handed over, started above */
			int i = atoi(PQgetvalue(res, row, 0));
			const char *outcome = PQgetvalue(res, row, 1);
			if (i < 0 || i >= b->nitems)
				continue;
			told[i] = true;
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
		/* An event ingest() gave no outcome: its registry source was
		 * removed while it waited (ingest() finds no source to route it
		 * by). Refused, and said so, not left out of the counts. */
		for (int i = 0; i < b->nitems; i++) {
			if (told[i])
				continue;
			b->owner[i]->rejected++;
			stats_events(in->d->stats, "rejected", 1);
			log_warn("ingest: registry %s was removed while its event waited: event "
				 "rejected",
				 b->owner[i]->source);
		}
		free(told);
		struct ingest_req *r;
		STAILQ_FOREACH(r, &b->reqs, link)
			answer_counts(in, r);
		in->in_batches -= b->nreqs;
		batch_free(b);
	}
	flush(in);
}

static void start_batch(struct ingest *in, struct ingest_conn *conn)
{
	struct ingest_batch *b = xcalloc(1, sizeof(*b));
	struct ingest_req *r;
	struct buf json = BUF_INIT;
	int cap = 0;
	size_t bytes = 0;

	b->conn = conn;
	STAILQ_INIT(&b->reqs);
	buf_putc(&json, '[');
	while ((r = STAILQ_FIRST(&in->pending))) {
		bool batch_alone = b->nreqs > 0 && STAILQ_FIRST(&b->reqs)->alone;
		if (!ingest_batch_takes(b->nreqs, batch_alone, b->nitems, bytes, r->alone,
					r->stored, r->bytes))
			break;
		dequeue(in);
		bytes += r->bytes;
		STAILQ_INSERT_TAIL(&b->reqs, r, link);
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
	in->storing += b->nitems;
	publish(in);
	clock_gettime(CLOCK_MONOTONIC, &conn->started);
	/* Its new deliveries may start leased to this instance (ingest.sql: handing over). */
	bool offered = delivery_offer(in->d->delivery, b->nitems, &b->offer);
	const char *params[] = {json.data,
				offered ? in->d->instance : NULL,
				offered ? b->offer.max_total : "0",
				offered ? b->offer.per_webhook : "0",
				offered ? b->offer.in_flight : "{}",
				offered ? b->offer.timeout_ms : "0"};
	pgc_query_tx(conn->pgc,
		     "SELECT r.i, r.outcome, r.namespace AS routed_to, (r.job).* "
		     "FROM reghook.ingest($1::jsonb, $2, $3, $4, $5::jsonb, $6) r",
		     6, params, on_batch_stored, on_batch_done, b);
	buf_free(&json);
}

/* ingest_batch_wait_ms() over the batches running now. */
static long batch_wait_ms(struct ingest *in)
{
	struct timespec now;
	int n = 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	for (int i = 0; i < in->nconns; i++) {
		const struct ingest_conn *conn = &in->conns[i];
		if (!conn->busy)
			continue;
		in->running[n].events = conn->events;
		in->running[n++].ran_ms = (now.tv_sec - conn->started.tv_sec) * 1000 +
					  (now.tv_nsec - conn->started.tv_nsec) / 1000000;
	}
	return ingest_batch_wait_ms(in->running, n, in->pending_events);
}

static void flush(struct ingest *in)
{
	for (int i = 0; i < in->nconns && !STAILQ_EMPTY(&in->pending); i++) {
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
	if (!STAILQ_EMPTY(&in->pending) && !ready(in)) {
		while (!STAILQ_EMPTY(&in->pending)) {
			struct ingest_req *r = dequeue(in);
			reply_unavailable(r->req, REPLY_RETRY_DOWN, "database unavailable; retry");
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

/*
 * A request with a wrong or missing token is logged once per
 * REFUSED_LOG_MS, the next line saying how many were not: one client
 * looping on it (no token needed) wrote 23,000 lines a second, which
 * pushed the events' lines out of a rate-limited journal.
 */
static void log_refused(struct ingest *in, const struct httpd_req *req, bool wrong)
{
	/* Which registry it is, and what mends it: a line alone told neither. */
	log_limited(&in->refused, REFUSED_LOG_MS, LOG_LEVEL_INFO,
		    "ingest: POST /events with a %s token refused, from %s: %s",
		    wrong ? "wrong" : "missing", httpd_peer(req),
		    wrong ? "a registry posts with its source's token, which 'reghook registry "
			    "rotate NAME' replaces and prints for its config.yml"
			  : "a registry's endpoint needs headers: Authorization: [Bearer TOKEN] "
			    "(reghook registry add prints the block)");
}

void ingest_handle(struct ingest *in, struct httpd_req *req)
{
	const char *auth = httpd_header(req, "Authorization");
	char err[512];
	long long source_id;
	const char *source_name;

	if (!ready(in)) {
		reply_unavailable(req, REPLY_RETRY_DOWN, "database unavailable; retry");
		return;
	}
	if (!sources_authenticate(in->sources, auth, &source_id, &source_name)) {
		log_refused(in, req, auth != NULL);
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
	if (in->pending_events >= PENDING_MAX || in->pending_bytes >= PENDING_MAX_BYTES) {
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
	/* The envelope holds what the batch needs: the body is not read again. */
	httpd_body_discard(req);
	for (size_t i = 0; i < r->env.count; i++) {
		if (r->env.events[i].kind == EVENT_IGNORED) {
			r->ignored++;
		} else {
			r->stored++;
			r->bytes += r->env.events[i].bytes;
		}
	}
	if (r->stored == 0) {
		answer_counts(in, r);
		req_free(r);
		return;
	}
	enqueue(in, r);
	/* Requests read in this turn of the loop join the same batch. */
	event_active(in->flush_ev, EV_TIMEOUT, 0);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	flush(arg);
}

static void on_warm(struct pgc *c, PGresult *res, void *arg)
{
	struct ingest_conn *conn = arg;
	conn->busy = false;
	if (pgc_ok(res)) {
		became_warm(conn);
	} else if (res) {
		log_warn("receiver connection: ingest() failed: %s", pgc_error(res));
		conn->warm_failed_ms = clock_monotonic_ms();
	}
	flush(conn->in);
}

/*
 * A new session's first ingest() loads the catalog and plans the
 * statement: 40-60 ms, against 2 ms for the next ones. An empty batch pays
 * that before a registry's request can wait for it (the first second
 * after a start or a reconnection would otherwise answer in 100-200 ms),
 * and proves that the connection can store events: /readyz waits for one
 * that has (ingest_check_ready()).
 */
static void warm_up(struct ingest_conn *conn)
{
	if (conn->warm || conn->busy || !pgc_is_up(conn->pgc) || !conn->in->d->schema_ok)
		return;
	/* Tried again at most once a second: each GET /readyz asks for one. */
	if (conn->warm_failed_ms && clock_monotonic_ms() - conn->warm_failed_ms < 1000)
		return;
	conn->busy = true;
	conn->events = 0;
	clock_gettime(CLOCK_MONOTONIC, &conn->started);
	pgc_query(conn->pgc, "SELECT count(*) FROM reghook.ingest('[]', NULL, 0, 0, '{}', 0)", 0,
		  NULL, on_warm, conn);
}

static void conn_up(struct pgc *c, void *arg)
{
	struct ingest_conn *conn = arg;
	conn->warm = false;
	conn->warm_failed_ms = 0;
	warm_up(conn);
	flush(conn->in);
}

static void conn_failed(struct pgc *c, enum pgc_failure what, void *arg)
{
	struct ingest_conn *conn = arg;
	stats_database_failure(conn->in->d->stats, "receiver", what == PGC_LOST);
}

static const struct pgc_hooks conn_hooks = {conn_up, NULL, NULL, conn_failed};

struct ingest *ingest_new(struct daemon *d)
{
	struct ingest *in = xcalloc(1, sizeof(*in));
	in->d = d;
	in->sources = sources_new(d->base);
	STAILQ_INIT(&in->pending);
	in->flush_ev = event_new(d->base, -1, 0, on_flush, in);
	in->slow_ev = evtimer_new(d->base, on_flush, in);
	in->nconns = (int)d->cfg->db_connections;
	in->conns = xcalloc((size_t)in->nconns, sizeof(*in->conns));
	in->running = xcalloc((size_t)in->nconns, sizeof(*in->running));
	for (int i = 0; i < in->nconns; i++) {
		in->conns[i].in = in;
		in->conns[i].pgc =
			pgc_new(d->base, d->cfg->database_url, &conn_hooks, &in->conns[i]);
		pgc_set_query_timeout(in->conns[i].pgc, (int)d->cfg->db_timeout_ms);
		pgc_set_statement_timeout(in->conns[i].pgc, (int)d->cfg->db_timeout_ms);
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
	free(in->running);
	event_free(in->flush_ev);
	event_free(in->slow_ev);
	while (!STAILQ_EMPTY(&in->pending))
		req_free(dequeue(in));
	sources_free(in->sources);
	free(in);
}

void ingest_schema_ready(struct ingest *in)
{
	sources_reload(in->sources, in->d->control);
	for (int i = 0; i < in->nconns; i++)
		warm_up(&in->conns[i]);
	flush(in);
}

void ingest_sources_stale(struct ingest *in)
{
	sources_stale(in->sources);
}

void ingest_sources_changed(struct ingest *in)
{
	if (pgc_is_up(in->d->control))
		sources_reload(in->sources, in->d->control);
}

bool ingest_check_ready(struct ingest *in)
{
	if (!ready(in))
		return false;
	for (int i = 0; i < in->nconns; i++)
		if (pgc_is_up(in->conns[i].pgc) && in->conns[i].warm)
			return true;
	/* A warm-up that failed (a table locked, a right missing) is tried again. */
	for (int i = 0; i < in->nconns; i++)
		warm_up(&in->conns[i]);
	return false;
}

bool ingest_busy(const struct ingest *in)
{
	return !STAILQ_EMPTY(&in->pending) || in->in_batches > 0;
}
