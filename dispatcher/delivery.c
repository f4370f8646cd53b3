/*
 * delivery: see delivery.h.
 *
 * DESIGN. Two database connections: `claim` (LISTEN reghook_deliveries,
 * claim_deliveries, reclaim_expired) and `done` (complete_deliveries), so a
 * slow write never delays the next claim. A claim asks for as many
 * deliveries as there are free slots, per webhook and in all, and every
 * claimed delivery starts at once, so a lease only ever covers a running
 * request. A webhook's slots are a window that widens while it answers
 * fast and narrows when it fails or slows (delivery_window_next): with a
 * fixed few, a fast endpoint's requests end before the next claim comes
 * back, and each claim round trip carries only those few deliveries. Finished attempts queue as
 * JSON and are written as one batch whenever the done connection is idle (group commit again); if
 * that connection drops, the batch is kept and written after the reconnect, and if the process dies
 * the leases expire and another dispatcher retries: at-least-once. Claims pause while a full batch
 * of records waits for the one being written, so a slow database bounds what is held in memory
 * instead of letting records pile up. Under a steady stream both loops would run back to back,
 * each statement carrying a few rows and costing PostgreSQL more than its rows; so records
 * gather for a moment before a write (delivery_write_wait_ms), and a finished request claims
 * again only when the last claim lacked room (delivery_facts.limited). New deliveries mostly skip
 * the claim: an ingest batch offers the free slots (delivery_offer), its transaction leases the
 * deliveries that fit to this instance and returns them with its outcomes, and they start like a
 * claim's rows as soon as the statement has run, while its commit waits for the disk; their
 * results wait for that commit (struct delivery_gate), since the writer cannot see the rows
 * before it. The claim and each offer out hold back what they
 * may lease (struct holder) until their rows start, so that together they never lease more than
 * the free slots. The janitor (janitor.c), which prunes old history, borrows the done connection.
 *
 * The engine's life and its claim loop are one state (enum delivery_state
 * in delivery.h), the writer's another (enum delivery_write_state): each
 * changes only through its set_state function, and the decisions, which
 * transition to take and how many records to write, are the pure
 * functions delivery_next(), delivery_write_take() and
 * delivery_write_done(), fed by step() and the write callbacks.
 */
#include "delivery.h"
#include "buf.h"
#include "clock.h"
#include "daemon.h"
#include "httpc.h"
#include "janitor.h"
#include "log.h"
#include "request.h"
#include "retry.h"
#include "stats.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#define POLL_MS 1000	       /* backstop for missed NOTIFYs and due retries */
#define RECLAIM_MS 5000	       /* how often expired leases are looked for */
#define SUMMARY_MS 60000       /* how often successes are summed up in the log */
#define BATCHES_LATELY_MS 2000 /* ingest batches came this recently: claims leave them half */
#define FAILED_LOG_MS 10000    /* a failing claim's line, at most this often */
#define STOP_GIVE_UP_MS 100    /* past the stop's deadline: requests started late given up */

struct inflight {
	LIST_ENTRY(inflight) link; /* in running */
	struct delivery *dp;
	struct request *req; /* owned */
	long long webhook_id;
	int attempt;
	int round_start; /* attempts before the last retrigger: this round counts from here */
	int max_attempts;
	struct delivery_gate *gate; /* a reference: the ingest batch it came from, if any */
};

/* Results of deliveries started before their batch's commit wait until open. */
struct delivery_gate {
	int refs;
	bool open;
	bool unsure; /* opened as the batch's connection was lost: committed or not? */
};

struct webhook_slots {
	long long webhook_id;
	int in_flight;
	int window;   /* requests it may have at once (delivery_window_next) */
	bool used;    /* a request started since the last poll */
	int asked;    /* the most the running (or last) claim could return for it */
	int claimed;  /* what it returned */
	int reserved; /* what the claim and the offers out may still lease of it */
};

/*
 * What a claim or an offer out may lease, held back from the free slots
 * until its rows have started, so that a claim and offers out at once never
 * lease more than the free slots, per webhook and in all.
 */
struct holder {
	struct delivery *dp;
	int total;   /* in all */
	int unknown; /* of each webhook without slots here */
	int n;
	struct reservation {
		long long webhook_id;
		int allowance;
	} * w; /* owned: of each webhook with slots */
};

struct delivery {
	struct daemon *d;	 /* borrowed */
	struct pgc *claim;	 /* owned */
	struct pgc *done;	 /* owned */
	struct httpc *http;	 /* owned */
	struct event *poll;	 /* owned */
	struct event *reclaim;	 /* owned */
	struct janitor *janitor; /* owned; borrows the done connection */
	struct event *summary;	 /* owned: logs the successes of the last minute */
	long succeeded;		 /* deliveries succeeded since the last summary */
	enum delivery_state state;
	int claim_asked;	   /* deliveries the running claim may return */
	struct holder *claiming;   /* owned: the running claim's reservation */
	int reserved;		   /* slots held by the claim and the offers out, in all */
	int holders;		   /* claims and offers out */
	int unknown_held;	   /* those that may lease of webhooks without slots */
	bool claim_deferred;	   /* a claim waits for such an offer to end */
	long long last_batch_ms;   /* when an ingest batch last asked to hand over; 0: never */
	bool limited;		   /* see delivery_facts.limited */
	struct event *write_timer; /* owned: ends the gathering of records */
	struct event *stop_timer;  /* owned: the stop's deadline for the requests in flight */
	int releasing;		   /* queries giving back the deliveries given up at a stop */
	long long stop_wait_ms;	   /* stopping: records wait for the database until then */

	LIST_HEAD(, inflight) running; /* owned */
	int in_flight;
	struct webhook_slots *slots; /* owned array */
	int nslots;

	/*
	 * Attempt records (JSON objects, each owned) waiting to be written,
	 * oldest first; the first nwriting are in the statement running now
	 * and leave the queue only when it succeeds.
	 */
	struct delivery_record *results;
	int nresults, cap_results;
	size_t results_bytes; /* the sum of their lengths */
	int nbusy;	      /* of them, kept for want of their rows (keep_until_ms) */
	int ndeferred;	      /* of those, kept because the database refused them (deferred) */
	int nwriting;
	int suspects;		  /* records of a refused batch still to be written one by one */
	bool deferring;		  /* the database refused the last write for a reason of its own */
	long long defer_until_ms; /* then: no write before this (monotonic) */
	struct log_quota claim_failed; /* lines about failed claims */
	enum delivery_write_state write_state;
};

static void step(struct delivery *dp, enum delivery_event ev);
static void wake(struct delivery *dp);
static void write_results(struct delivery *dp);

/*
 * The claim loop's transitions, and the engine's life (see enum
 * delivery_state). Pure: what the engine knows comes in f, and the caller
 * sends a claim when *claim_now is set.
 */
enum delivery_state delivery_next(enum delivery_state s, enum delivery_event ev,
				  const struct delivery_facts *f, bool *claim_now)
{
	*claim_now = false;
	if (s == DELIVERY_STOPPING || ev == DELIVERY_EV_STOP)
		return DELIVERY_STOPPING;
	if (s == DELIVERY_WAITING)
		return ev == DELIVERY_EV_SCHEMA_READY ? DELIVERY_IDLE : DELIVERY_WAITING;
	switch (ev) {
	case DELIVERY_EV_FREED:
		/* Only a slot the last claim lacked is worth claiming for. */
		if (!f->limited)
			return s;
		__attribute__((fallthrough));
	case DELIVERY_EV_WAKE:
		if (s == DELIVERY_IDLE)
			break;
		/* Woken while claiming: claim again once this claim's rows have started. */
		return f->up ? DELIVERY_CLAIMING_AGAIN : s;
	case DELIVERY_EV_CLAIMED_FULL:
		/* As many rows as asked for: more may be due. */
		break;
	case DELIVERY_EV_CLAIMED_SHORT:
		/*
		 * It took all that was due: what comes later is NOTIFYed, freed
		 * slots wake the loop, and retries come with the poll.
		 */
		if (s == DELIVERY_CLAIMING_AGAIN)
			break;
		return DELIVERY_IDLE;
	case DELIVERY_EV_CLAIM_FAILED:
		/* A wake-up noted meanwhile is dropped: the poll comes within a second. */
		return DELIVERY_IDLE;

	case DELIVERY_EV_SCHEMA_READY: /* again, after the control connection came back */
	case DELIVERY_EV_STOP:	       /* (handled above) */
		return s;
	}
	/* Free slots, and records held for writing not over their bounds, or the loop rests. */
	if (!f->up || f->room <= 0 || f->held >= DELIVERY_WRITE_BATCH_MAX ||
	    f->held_bytes >= DELIVERY_HELD_BYTES_MAX)
		return DELIVERY_IDLE;
	*claim_now = true;
	return DELIVERY_CLAIMING;
}

int delivery_write_take(const struct delivery_record *records, int held, int suspects)
{
	int max = suspects > 0			    ? 1
		  : held < DELIVERY_WRITE_BATCH_MAX ? held
						    : DELIVERY_WRITE_BATCH_MAX;
	size_t bytes = 1; /* '[' */
	int n = 0;
	while (n < max && (n == 0 || bytes < DELIVERY_WRITE_BATCH_BYTES)) {
		bytes += records[n].len + (n > 0); /* a ',' before all but the first */
		n++;
	}
	return n;
}

long delivery_write_wait_ms(int held, long oldest_age_ms, int suspects, bool stopping)
{
	if (held <= 0 || suspects > 0 || stopping || held >= DELIVERY_WRITE_BATCH_MAX ||
	    oldest_age_ms >= DELIVERY_WRITE_GATHER_MS)
		return 0;
	return DELIVERY_WRITE_GATHER_MS - (oldest_age_ms < 0 ? 0 : oldest_age_ms);
}

bool delivery_refusal_is_records(const char *sqlstate)
{
	return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0 ||
	       strncmp(sqlstate, "54", 2) == 0;
}

int delivery_write_done(enum delivery_write_outcome outcome, int n, int *suspects)
{
	if (outcome == DELIVERY_WRITE_LOST || outcome == DELIVERY_WRITE_DEFERRED)
		return 0;
	if (outcome == DELIVERY_WRITE_REFUSED && n > 1) {
		*suspects = n;
		return 0;
	}
	*suspects = *suspects > n ? *suspects - n : 0;
	return n;
}

int delivery_window_start(int cap)
{
	return cap < DELIVERY_WINDOW_START ? cap : DELIVERY_WINDOW_START;
}

int delivery_window_next(int window, int cap, bool fast)
{
	int start = delivery_window_start(cap);
	int next = fast ? window + 1 : window / 2;
	return next > cap ? cap : next < start ? start : next;
}

static void delivery_set_state(struct delivery *dp, enum delivery_state state)
{
	dp->state = state;
}

static void write_set_state(struct delivery *dp, enum delivery_write_state state)
{
	dp->write_state = state;
}

static struct webhook_slots *slots_for(struct delivery *dp, long long webhook_id)
{
	for (int i = 0; i < dp->nslots; i++)
		if (dp->slots[i].webhook_id == webhook_id)
			return &dp->slots[i];
	dp->slots = xrealloc(dp->slots, (size_t)(dp->nslots + 1) * sizeof(*dp->slots));
	int start = delivery_window_start((int)dp->d->cfg->max_in_flight_per_webhook);
	dp->slots[dp->nslots] = (struct webhook_slots){webhook_id, 0, start, false, start, 0, 0};
	return &dp->slots[dp->nslots++];
}

/*
 * A request to the webhook ended, fast or not: its window moves. The entry
 * is kept while the webhook stays busy (slots_forget_idle): ingest batches
 * hand over new deliveries only to webhooks with an entry (delivery_offer).
 */
static void slots_release(struct delivery *dp, long long webhook_id, bool fast)
{
	int cap = (int)dp->d->cfg->max_in_flight_per_webhook;
	for (int i = 0; i < dp->nslots; i++) {
		struct webhook_slots *s = &dp->slots[i];
		if (s->webhook_id != webhook_id)
			continue;
		s->in_flight--;
		s->window = delivery_window_next(s->window, cap, fast);
		return;
	}
}

/* Webhooks that started no request since the last poll start afresh. */
static void slots_forget_idle(struct delivery *dp)
{
	for (int i = dp->nslots - 1; i >= 0; i--) {
		if (dp->slots[i].in_flight <= 0 && dp->slots[i].reserved <= 0 && !dp->slots[i].used)
			dp->slots[i] = dp->slots[--dp->nslots];
		else
			dp->slots[i].used = false;
	}
}

static void gate_unref(struct delivery_gate *g)
{
	if (g && --g->refs == 0)
		free(g);
}

static double jitter01(void)
{
	return (double)random() / ((double)RAND_MAX + 1.0);
}

/*
 * A failed or refused attempt is worth a line at the default level; a
 * success only counts towards the summary. The URL is not logged: it may
 * carry credentials or a token in its path.
 */
static void log_attempt(struct delivery *dp, const struct inflight *f, const char *outcome,
			long long delay_ms)
{
	const struct request *r = f->req;
	if (request_outcome(r) == REQUEST_SUCCEEDED) {
		dp->succeeded++;
		log_debug("delivery %s (webhook %lld) attempt %d succeeded", request_delivery_id(r),
			  f->webhook_id, f->attempt);
		return;
	}
	if (!log_enabled(LOG_LEVEL_WARN))
		return;
	const char *cls = request_error_class(r) ? request_error_class(r) : "invalid";
	char next[96];
	if (strcmp(outcome, "retry") == 0) {
		time_t at = time(NULL) + (time_t)((delay_ms + 999) / 1000);
		struct tm tm;
		gmtime_r(&at, &tm);
		strftime(next, sizeof(next), "next attempt at %Y-%m-%dT%H:%M:%SZ", &tm);
	} else if (strcmp(outcome, "gone") == 0) {
		snprintf(next, sizeof(next), "the endpoint answered 410: webhook disabled");
	} else {
		snprintf(next, sizeof(next), "failed for good");
	}
	const char *hint = strstr(request_error(r), REQUEST_PRIVATE_OFF)
				   ? " (allow_private_networks, or allow_private_targets = true, "
				     "allows private targets)"
				   : "";
	/* An attempt past max_attempts: one after a lost attempt (which never
	 * ends a round), or max_attempts lowered while the delivery waited. */
	int n = f->attempt - f->round_start;
	log_warn("delivery %s (webhook %lld) attempt %d %s %d %s: %s: %s%s; %s",
		 request_delivery_id(r), f->webhook_id, n,
		 n <= f->max_attempts ? "of" : "past max_attempts", f->max_attempts,
		 strcmp(cls, "blocked") == 0 ? "refused" : "failed", cls, request_error(r), hint,
		 next);
}

static void on_summary(evutil_socket_t fd, short what, void *arg)
{
	struct delivery *dp = arg;
	if (dp->succeeded > 0)
		log_info("%ld %s succeeded in the last minute", dp->succeeded,
			 dp->succeeded == 1 ? "delivery" : "deliveries");
	dp->succeeded = 0;
}

static void on_transfer_done(CURL *easy, CURLcode result, void *arg)
{
	struct inflight *f = arg;
	struct delivery *dp = f->dp;
	struct request *r = f->req;
	const struct config *cfg = dp->d->cfg;
	const char *outcome;
	long long delay = 0;

	request_finish(r, result);
	switch (request_outcome(r)) {
	case REQUEST_SUCCEEDED:
		outcome = "succeeded";
		break;
	case REQUEST_GONE:
		outcome = "gone";
		break;
	case REQUEST_INVALID:
		outcome = "failed";
		break;
	default:
		if (f->attempt - f->round_start >= f->max_attempts) {
			outcome = "failed";
		} else {
			outcome = "retry";
			delay = retry_delay_ms(cfg->retry_ms, cfg->retry_steps,
					       f->attempt - f->round_start + 1, jitter01());
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			delay = retry_after_clamp_ms(delay, request_retry_after(r),
						     (long long)now.tv_sec);
		}
	}
	log_attempt(dp, f, outcome, delay);
	stats_attempt(dp->d->stats, outcome, request_error_class(r),
		      (double)request_duration_ms(r) / 1000.0);
	struct buf record = BUF_INIT;
	request_record_json(r, &record, outcome, delay);
	if (dp->nresults == dp->cap_results) {
		dp->cap_results = dp->cap_results ? dp->cap_results * 2 : 64;
		dp->results = xrealloc(dp->results, (size_t)dp->cap_results * sizeof(*dp->results));
	}
	size_t len = record.len;
	dp->results_bytes += len;
	dp->results[dp->nresults] = (struct delivery_record){
		.json = buf_steal(&record),
		.len = len,
		.queued_ms = clock_monotonic_ms(),
		.gate = f->gate, /* its reference moves with it */
		.attempt = f->attempt,
	};
	snprintf(dp->results[dp->nresults++].id, sizeof(dp->results->id), "%s",
		 request_delivery_id(r));

	/* Unlink and free; curl has already let go of the handle. */
	LIST_REMOVE(f, link);
	dp->in_flight--;
	stats_in_flight(dp->d->stats, dp->in_flight);
	slots_release(dp, f->webhook_id,
		      request_outcome(r) == REQUEST_SUCCEEDED &&
			      request_duration_ms(r) < DELIVERY_WINDOW_FAST_MS);
	request_free(r);
	free(f);

	write_results(dp);
	step(dp, DELIVERY_EV_FREED);
}

/* A column of a claimed row by name; NULL for SQL NULL. */
static const char *col(PGresult *res, int row, const char *name)
{
	int c = PQfnumber(res, name);
	return c < 0 || PQgetisnull(res, row, c) ? NULL : PQgetvalue(res, row, c);
}

/* The same, "" for SQL NULL: for columns the claim query never leaves null. */
static const char *colz(PGresult *res, int row, const char *name)
{
	const char *v = col(res, row, name);
	return v ? v : "";
}

static void free_result(struct delivery *dp, struct delivery_record *r);

/*
 * A delivery starts with the attempt number of a result still queued from
 * an unsure batch (its connection lost while it committed): that batch did
 * not commit after all, and the registry's retry of its event made the
 * delivery again, with the same id (ingest.sql). The old result is not
 * this lease's: written now, it would be recorded as this attempt and move
 * the delivery on, and this attempt's own result would find its lease gone.
 * It is dropped, said so (its request reached the endpoint, which gets
 * this one too: at-least-once). Not those being written now.
 */
static void drop_superseded(struct delivery *dp, const char *id, int attempt)
{
	int kept = dp->nwriting;
	for (int i = dp->nwriting; i < dp->nresults; i++) {
		struct delivery_record *r = &dp->results[i];
		if (r->gate && r->gate->open && r->gate->unsure && r->attempt == attempt &&
		    strcmp(r->id, id) == 0) {
			log_warn(
				"delivery %s: made again by the registry's retry of its event (its "
				"first batch was not committed); the attempt sent before is not "
				"recorded",
				id);
			free_result(dp, r);
			continue;
		}
		dp->results[kept++] = *r; /* kept <= i: moves down */
	}
	dp->nresults = kept;
}

/*
 * Whether this process is sending, or has sent, the delivery's attempt: its
 * lease was lost with the database (a crash took the claim's commit, or the
 * batch that handed it over did not commit and the registry's retry made
 * it again), and the delivery, pending again as it was, leased anew with
 * the same attempt number. That request is not sent a second time at once:
 * its result is this lease's, and is recorded as such.
 */
static bool already_running(struct delivery *dp, long long webhook_id, const char *id, int attempt)
{
	struct inflight *f;
	bool found = false;
	LIST_FOREACH(f, &dp->running, link)
		found = found || (f->webhook_id == webhook_id && f->attempt == attempt &&
				  strcmp(request_delivery_id(f->req), id) == 0);
	/* Or made, its result not written yet (not one of a batch that may not have committed). */
	for (int i = 0; i < dp->nresults && !found; i++) {
		const struct delivery_record *r = &dp->results[i];
		found = r->attempt == attempt && strcmp(r->id, id) == 0 &&
			!(r->gate && r->gate->unsure);
	}
	if (found)
		log_warn("delivery %s: leased again while its attempt %d is made here (the lease "
			 "was lost with the database); not sent twice, its result is recorded for "
			 "the new lease",
			 id, attempt);
	return found;
}

static void start_one(struct delivery *dp, PGresult *res, int row, struct delivery_gate *gate)
{
	const struct config *cfg = dp->d->cfg;
	struct request_spec s = {
		.delivery_id = colz(res, row, "delivery_id"),
		.attempt = atoi(colz(res, row, "attempt")),
		.action = colz(res, row, "action"),
		.is_test = strcmp(colz(res, row, "is_test"), "t") == 0,
		.callback_token = colz(res, row, "callback_token"),
		.webhook_id = atoll(colz(res, row, "webhook_id")),
		.url_template = colz(res, row, "url"),
		.method = colz(res, row, "method"),
		.content_type = colz(res, row, "content_type"),
		.username = col(res, row, "username"),
		.password = col(res, row, "password"),
		.secret = col(res, row, "secret"),
		.format = colz(res, row, "format"),
		.timeout_ms = atoll(colz(res, row, "timeout_ms")),
		.headers_json = col(res, row, "headers"),
		.repository = col(res, row, "repository"),
		.name = col(res, row, "name"),
		.tag = col(res, row, "tag"),
		.digest = col(res, row, "digest"),
		.actor = col(res, row, "actor"),
		.occurred_at = atoll(colz(res, row, "occurred_at")),
		.raw = col(res, row, "raw"),
		.namespace_ = colz(res, row, "namespace"),
		.description = col(res, row, "description"),
		.is_private = strcmp(colz(res, row, "is_private"), "t") == 0,
		.namespace_created_at = atoll(colz(res, row, "namespace_created_at")),
		.event_uuid = col(res, row, "event_uuid"),
		.event_time = col(res, row, "event_time"),
		.media_type = col(res, row, "media_type"),
		.size = atoll(colz(res, row, "size")),
		.has_size = col(res, row, "size") != NULL,
		.source_name = col(res, row, "source_name"),
		.template_ = col(res, row, "template"),
	};
	const char *max = col(res, row, "max_attempts");
	if (already_running(dp, s.webhook_id, s.delivery_id, s.attempt))
		return;
	if (dp->nresults > dp->nwriting)
		drop_superseded(dp, s.delivery_id, s.attempt);
	struct inflight *f = xcalloc(1, sizeof(*f));
	f->dp = dp;
	f->webhook_id = s.webhook_id;
	f->attempt = s.attempt;
	f->round_start = atoi(colz(res, row, "round_start"));
	f->max_attempts = max ? atoi(max) : (int)cfg->max_attempts;
	f->gate = gate;
	if (gate)
		gate->refs++;
	f->req = request_new(&s, cfg);
	LIST_INSERT_HEAD(&dp->running, f, link);
	dp->in_flight++;
	stats_in_flight(dp->d->stats, dp->in_flight);
	struct webhook_slots *slot = slots_for(dp, f->webhook_id);
	slot->in_flight++;
	slot->claimed++;
	slot->used = true;

	CURL *easy = request_easy(f->req);
	if (!easy || !httpc_add(dp->http, easy, on_transfer_done, f))
		on_transfer_done(easy, CURLE_FAILED_INIT, f);
}

/*
 * Whether ingest batches come these days. A claim meanwhile takes half of
 * the free room, in all and of each webhook's window (rounded up), and
 * leaves them the rest: a batch stored while a claim is out (the poll's,
 * every second, or one woken by a NOTIFY) still hands its deliveries over.
 * A time, not a flag the poll resets: the poll's own claim is the one most
 * likely to be out when a batch comes.
 */
static bool batches_lately(const struct delivery *dp)
{
	return dp->last_batch_ms > 0 &&
	       clock_monotonic_ms() - dp->last_batch_ms < BATCHES_LATELY_MS;
}

/*
 * Reserves, for a claim or an offer, what each webhook with slots may lease
 * (its window less its requests in flight and what others hold, at most
 * per_max; half of that, rounded up, for a claim while ingest batches
 * offer) and room in all; unknown is what each other webhook may lease.
 * Returns the JSON object claim_deliveries() and ingest() take, where they
 * give each webhook per_webhook (= unknown) less its value.
 */
static char *reserve(struct delivery *dp, struct holder *h, int room, int unknown, int per_max,
		     bool claim)
{
	int cap = (int)dp->d->cfg->max_in_flight_per_webhook;
	struct buf json = BUF_INIT;
	*h = (struct holder){.dp = dp, .total = room, .unknown = unknown};
	h->w = xcalloc((size_t)dp->nslots + 1, sizeof(*h->w));
	buf_putc(&json, '{');
	for (int i = 0; i < dp->nslots; i++) {
		struct webhook_slots *s = &dp->slots[i];
		/* A reload may have lowered the cap below a window. */
		int window = s->window < cap ? s->window : cap;
		int a = window - s->in_flight - s->reserved;
		a = a < 0 ? 0 : a > per_max ? per_max : a;
		if (claim && batches_lately(dp))
			a -= a / 2;
		s->reserved += a;
		h->w[h->n++] = (struct reservation){s->webhook_id, a};
		buf_printf(&json, "%s\"%lld\":%d", i ? "," : "", s->webhook_id, unknown - a);
		if (claim) {
			s->asked = a;
			s->claimed = 0;
		}
	}
	buf_putc(&json, '}');
	dp->reserved += room;
	dp->holders++;
	dp->unknown_held += unknown > 0;
	return json.data;
}

/* Its rows have started, or it failed: what it held is free again. */
static void release(struct delivery *dp, struct holder *h)
{
	dp->reserved -= h->total;
	dp->holders--;
	dp->unknown_held -= h->unknown > 0;
	for (int i = 0; i < h->n; i++)
		for (int k = 0; k < dp->nslots; k++)
			if (dp->slots[k].webhook_id == h->w[i].webhook_id)
				dp->slots[k].reserved -= h->w[i].allowance;
	free(h->w);
	h->w = NULL;
	h->n = 0;
}

/*
 * A claim's rows have started (n of them): the loop goes on. A webhook that
 * got all it could have may have more due. If a slot of it was freed while
 * the claim ran, no later end of a request may come to claim the rest:
 * claim again now.
 */
static void claim_ended(struct delivery *dp, int n)
{
	bool full = n >= dp->claim_asked, again = false;
	int cap = (int)dp->d->cfg->max_in_flight_per_webhook;
	for (int i = 0; i < dp->nslots; i++) {
		struct webhook_slots *s = &dp->slots[i];
		if (s->claimed < s->asked)
			continue;
		full = true;
		again = again || s->in_flight + s->reserved < (s->window < cap ? s->window : cap);
	}
	dp->limited = full;
	step(dp,
	     n >= dp->claim_asked || again ? DELIVERY_EV_CLAIMED_FULL : DELIVERY_EV_CLAIMED_SHORT);
}

static void on_claimed(struct pgc *c, PGresult *res, void *arg)
{
	struct delivery *dp = arg;
	/*
	 * Still claiming while the rows start: one that fails at once ends in
	 * a wake-up, which must only be noted, not count room without the rows
	 * not started yet.
	 */
	int n = pgc_ok(res) ? PQntuples(res) : 0;
	for (int i = 0; i < n; i++)
		start_one(dp, res, i, NULL);
	if (dp->claiming) {
		release(dp, dp->claiming);
		free(dp->claiming);
		dp->claiming = NULL;
	}
	if (!pgc_ok(res)) {
		if (res)
			log_limited(&dp->claim_failed, FAILED_LOG_MS, LOG_LEVEL_ERROR,
				    "claiming deliveries: %s", pgc_error(res));
		dp->limited = true;
		step(dp, DELIVERY_EV_CLAIM_FAILED);
		return;
	}
	if (n > 0)
		log_debug("claimed %d deliveries (%d in flight)", n, dp->in_flight);
	claim_ended(dp, n);
}

/*
 * Asks for as many due deliveries as there are free slots, per webhook and
 * in all. Webhooks without slots here go to one holder at a time: while an
 * offer out may lease of them, the claim waits for it to end (a couple of
 * milliseconds; it is mostly that offer's own leftovers the claim was
 * woken for), rather than go without them and have to come again.
 */
static void send_claim(struct delivery *dp, int room)
{
	const struct config *cfg = dp->d->cfg;
	if (dp->unknown_held > 0) {
		dp->claim_deferred = true;
		return;
	}
	dp->claim_deferred = false;
	if (batches_lately(dp))
		room -= room / 2;
	int unknown = delivery_window_start((int)cfg->max_in_flight_per_webhook);
	char total[16], per[16], timeout[24];
	snprintf(total, sizeof(total), "%d", room);
	snprintf(per, sizeof(per), "%d", unknown);
	snprintf(timeout, sizeof(timeout), "%lld", cfg->request_timeout_ms);
	dp->claiming = xcalloc(1, sizeof(*dp->claiming));
	char *busy = reserve(dp, dp->claiming, room, unknown, cfg->max_in_flight_per_webhook, true);
	dp->claim_asked = room;
	const char *params[] = {dp->d->instance, total, per, busy, timeout};
	pgc_query(dp->claim, "SELECT * FROM reghook.claim_deliveries($1, $2, $3, $4, $5)", 5,
		  params, on_claimed, dp);
	free(busy);
}

/*
 * Every change of the engine's state goes through here: delivery_next()
 * decides from what the engine knows now, and a claim goes out when it
 * says so.
 */
static void step(struct delivery *dp, enum delivery_event ev)
{
	const struct config *cfg = dp->d->cfg;
	struct delivery_facts f = {
		.up = pgc_is_up(dp->claim),
		.room = (int)cfg->max_in_flight - dp->in_flight - dp->reserved,
		.held = dp->nresults - dp->nwriting,
		.held_bytes = dp->results_bytes,
		.limited = dp->limited,
	};
	bool claim_now;
	delivery_set_state(dp, delivery_next(dp->state, ev, &f, &claim_now));
	if (claim_now)
		send_claim(dp, f.room);
	else if (dp->state == DELIVERY_IDLE &&
		 (!f.up || f.room <= 0 || f.held >= DELIVERY_WRITE_BATCH_MAX ||
		  f.held_bytes >= DELIVERY_HELD_BYTES_MAX))
		/* It rests for want of room (or of a connection): a freed slot wakes it. */
		dp->limited = true;
}

bool delivery_offer(struct delivery *dp, int events, struct delivery_offer *o)
{
	const struct config *cfg = dp->d->cfg;
	int room = (int)cfg->max_in_flight - dp->in_flight - dp->reserved;
	*o = (struct delivery_offer){0};
	if (events > 0)
		dp->last_batch_ms = clock_monotonic_ms();
	if (dp->state == DELIVERY_WAITING || dp->state == DELIVERY_STOPPING || room <= 0 ||
	    events <= 0 || dp->nresults - dp->nwriting >= DELIVERY_WRITE_BATCH_MAX ||
	    dp->results_bytes >= DELIVERY_HELD_BYTES_MAX)
		return false;
	int start = delivery_window_start((int)cfg->max_in_flight_per_webhook);
	/*
	 * A webhook without slots here (none of its requests lately) only when
	 * nothing else is out, so that the claim, which takes them too, never
	 * waits long for them. Each webhook at most one delivery per event.
	 */
	int unknown = dp->holders == 0 && dp->state == DELIVERY_IDLE ? start : 0;
	int known = 0;
	for (int i = 0; i < dp->nslots; i++)
		known += dp->slots[i].window > dp->slots[i].in_flight + dp->slots[i].reserved;
	if (unknown == 0 && known == 0)
		return false;
	/*
	 * At most what its events can take (one delivery each per webhook, and
	 * `unknown` webhooks without slots), so that a claim woken meanwhile
	 * still finds room.
	 */
	if (room > events * (known + unknown))
		room = events * (known + unknown);
	o->holder = xcalloc(1, sizeof(*o->holder));
	o->in_flight = reserve(dp, o->holder, room, unknown, events, false);
	snprintf(o->max_total, sizeof(o->max_total), "%d", room);
	snprintf(o->per_webhook, sizeof(o->per_webhook), "%d", unknown);
	snprintf(o->timeout_ms, sizeof(o->timeout_ms), "%lld", cfg->request_timeout_ms);
	return true;
}

struct delivery_gate *delivery_offer_done(struct delivery *dp, struct delivery_offer *o,
					  PGresult *res)
{
	struct holder *h = o->holder;
	struct delivery_gate *gate = NULL;
	free(o->in_flight);
	*o = (struct delivery_offer){0};
	if (!h)
		return NULL;
	int job = pgc_ok(res) ? PQfnumber(res, "delivery_id") : -1, n = 0;
	for (int i = 0; job >= 0 && i < PQntuples(res); i++) {
		if (PQgetisnull(res, i, job))
			continue;
		if (!gate) {
			gate = xcalloc(1, sizeof(*gate));
			gate->refs = 1; /* the batch's, until delivery_gate_open() */
		}
		start_one(dp, res, i, gate);
		n++;
	}
	if (n > 0)
		log_debug("handed over %d deliveries (%d in flight)", n, dp->in_flight);
	release(dp, h);
	free(h);
	if (dp->claim_deferred && dp->unknown_held == 0) {
		/* The claim that waited for this offer goes now, if the loop still wants it. */
		dp->claim_deferred = false;
		if (!dp->claiming &&
		    (dp->state == DELIVERY_CLAIMING || dp->state == DELIVERY_CLAIMING_AGAIN)) {
			int room = (int)dp->d->cfg->max_in_flight - dp->in_flight - dp->reserved;
			send_claim(dp, room > 0 ? room : 0);
			return gate;
		}
	}
	step(dp, DELIVERY_EV_FREED);
	return gate;
}

void delivery_gate_open(struct delivery *dp, struct delivery_gate *g, bool sure)
{
	if (!g)
		return;
	g->open = true;
	g->unsure = !sure;
	gate_unref(g);
	write_results(dp);
}

/* Deliveries may be due (NOTIFY, the poll, leases reclaimed) or room was freed. */
static void wake(struct delivery *dp)
{
	step(dp, DELIVERY_EV_WAKE);
}

static void free_result(struct delivery *dp, struct delivery_record *r)
{
	dp->results_bytes -= r->len;
	dp->nbusy -= r->keep_until_ms > 0;
	dp->ndeferred -= r->deferred;
	free(r->json);
	gate_unref(r->gate);
}

/* Drops the first n results (written, or given up). */
static void drop_results(struct delivery *dp, int n)
{
	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
		free_result(dp, &dp->results[i]);
	memmove(dp->results, dp->results + n, (size_t)(dp->nresults - n) * sizeof(*dp->results));
	dp->nresults -= n;
}

/*
 * Whether a result written but not recorded stays queued, to be written
 * again: its delivery's row was held by another transaction (busy), or was
 * not there yet, after a batch whose connection was lost while it
 * committed (its commit may land later, and its deliveries with it). How
 * long it may stay, and what the log says.
 */
static bool keep_result(struct delivery_record *r, bool busy, bool missing, long long now)
{
	bool unsure = missing && r->gate && r->gate->unsure;
	if (!busy && !unsure)
		return false;
	if (r->keep_until_ms == 0) {
		if (busy)
			log_warn("delivery %s: its row is held by another transaction; its attempt "
				 "is written once that ends",
				 r->id);
		else
			log_warn("delivery %s: not stored yet (the batch that made it lost its "
				 "connection while it committed); its attempt is written if it was",
				 r->id);
		r->keep_until_ms = now + (busy ? DELIVERY_BUSY_KEEP_MS : DELIVERY_UNSURE_KEEP_MS);
		return true;
	}
	if (now < r->keep_until_ms)
		return true;
	if (busy)
		log_error("delivery %s: its row was held by another transaction for %d min; "
			  "attempt record dropped (the delivery is tried again once its lease "
			  "runs out)",
			  r->id, DELIVERY_BUSY_KEEP_MS / 60000);
	else
		log_warn("delivery %s: its batch was not committed; attempt record dropped (the "
			 "registry, answered 503, sends the event again)",
			 r->id);
	return false;
}

/*
 * The first n results were written; busy and missing (complete_deliveries()'
 * arrays, as text) name the deliveries whose results were not recorded for
 * want of their rows: those stay queued if keep_result() says so.
 */
static void written_results(struct delivery *dp, int n, const char *busy, const char *missing)
{
	long long now = clock_monotonic_ms();
	int kept = 0;
	for (int i = 0; i < n; i++) {
		struct delivery_record *r = &dp->results[i];
		bool was_kept = r->keep_until_ms > 0;
		if (!keep_result(r, strstr(busy, r->id), strstr(missing, r->id), now)) {
			free_result(dp, r);
			continue;
		}
		dp->nbusy += !was_kept;
		r->retry_ms = now + DELIVERY_BUSY_RETRY_MS;
		dp->results[kept++] = *r; /* kept <= i: moves down */
	}
	memmove(dp->results + kept, dp->results + n,
		(size_t)(dp->nresults - n) * sizeof(*dp->results));
	dp->nresults -= n - kept;
}

/*
 * The first n results were refused by the database for a reason of its own
 * (delivery_refusal_is_records): each stays queued, written again after
 * DELIVERY_BUSY_RETRY_MS, for up to DELIVERY_BUSY_KEEP_MS from its first
 * refusal (then dropped: its lease has long run out).
 */
static void defer_results(struct delivery *dp, int n, const char *why)
{
	long long now = clock_monotonic_ms();
	if (!dp->deferring)
		log_warn("writing %d delivery attempts: %s; kept, and written again every %d s for "
			 "up to %d min",
			 n, why, DELIVERY_BUSY_RETRY_MS / 1000, DELIVERY_BUSY_KEEP_MS / 60000);
	dp->deferring = true;
	/* New records wait too: one statement a try, not one for each record that comes. */
	dp->defer_until_ms = now + DELIVERY_BUSY_RETRY_MS;
	int kept = 0;
	for (int i = 0; i < n; i++) {
		struct delivery_record *r = &dp->results[i];
		if (!r->deferred) {
			/* Its 10 minutes start now, whatever kept it before. */
			dp->nbusy += r->keep_until_ms == 0;
			dp->ndeferred++;
			r->deferred = true;
			r->keep_until_ms = now + DELIVERY_BUSY_KEEP_MS;
		} else if (now >= r->keep_until_ms) {
			log_error(
				"delivery %s: the database refused its attempt record for %d min; "
				"record dropped (the delivery is tried again once its lease runs "
				"out)",
				r->id, DELIVERY_BUSY_KEEP_MS / 60000);
			free_result(dp, r);
			continue;
		}
		r->retry_ms = now + DELIVERY_BUSY_RETRY_MS;
		dp->results[kept++] = *r; /* kept <= i: moves down */
	}
	memmove(dp->results + kept, dp->results + n,
		(size_t)(dp->nresults - n) * sizeof(*dp->results));
	dp->nresults -= n - kept;
}

static void on_written(struct pgc *c, PGresult *res, void *arg)
{
	struct delivery *dp = arg;
	int n = dp->nwriting;
	enum delivery_write_outcome outcome = !res	    ? DELIVERY_WRITE_LOST
					      : pgc_ok(res) ? DELIVERY_WRITTEN
					      : delivery_refusal_is_records(pgc_sqlstate(res))
						      ? DELIVERY_WRITE_REFUSED
						      : DELIVERY_WRITE_DEFERRED;
	write_set_state(dp, DELIVERY_WRITE_IDLE);
	dp->nwriting = 0;
	int written = delivery_write_done(outcome, n, &dp->suspects);
	if (outcome == DELIVERY_WRITE_LOST) {
		/* The records stay queued and go after the reconnect. */
		log_warn("writing %d delivery attempts: connection lost; will retry", n);
		return;
	}
	if (outcome == DELIVERY_WRITE_DEFERRED) {
		defer_results(dp, n, pgc_error(res));
	} else if (outcome == DELIVERY_WRITTEN) {
		if (dp->deferring)
			log_info("delivery attempts written again after the database refused them");
		dp->deferring = false;
		bool row = PQntuples(res) == 1 && PQnfields(res) == 3;
		written_results(dp, written, row ? PQgetvalue(res, 0, 1) : "",
				row ? PQgetvalue(res, 0, 2) : "");
	} else {
		if (written == 0)
			/* One bad record must not cost the others. */
			log_warn("writing %d delivery attempts: %s; retrying one by one", n,
				 pgc_error(res));
		else
			/* Its lease expires and the delivery is tried again. */
			log_error("writing a delivery attempt: %s; record dropped", pgc_error(res));
		drop_results(dp, written);
	}
	write_results(dp);
	step(dp, DELIVERY_EV_FREED); /* the loop may have rested for this write (limited) */
}

static bool result_ready(const struct delivery_record *r, long long now)
{
	return (!r->gate || r->gate->open) && r->retry_ms <= now;
}

/*
 * Moves the results that may be written ahead of those whose batch may not
 * have committed yet (delivery_offer_done), each group in its order, so
 * that a batch slow to commit holds back only its own; returns how many
 * may be written. Only while no write runs (the first nwriting are its).
 */
static int order_ready(struct delivery *dp)
{
	int n = dp->nresults, ready = 0, waiting = 0;
	long long now = clock_monotonic_ms();
	while (ready < n && result_ready(&dp->results[ready], now))
		ready++;
	if (ready == n)
		return ready;
	struct delivery_record *held = xcalloc((size_t)(n - ready), sizeof(*held));
	for (int i = ready; i < n; i++) {
		if (result_ready(&dp->results[i], now))
			dp->results[ready++] = dp->results[i]; /* ready <= i: moves down */
		else
			held[waiting++] = dp->results[i];
	}
	memcpy(dp->results + ready, held, (size_t)waiting * sizeof(*held));
	free(held);
	return ready;
}

static void write_results(struct delivery *dp)
{
	if (dp->write_state != DELIVERY_WRITE_IDLE || dp->nresults == 0 || !pgc_is_up(dp->done))
		return;
	long long defer = dp->deferring ? dp->defer_until_ms - clock_monotonic_ms() : 0;
	if (defer > 0) {
		if (!evtimer_pending(dp->write_timer, NULL)) {
			struct timeval tv = {defer / 1000, (defer % 1000) * 1000};
			evtimer_add(dp->write_timer, &tv);
		}
		return;
	}
	int ready = order_ready(dp);
	if (ready == 0) {
		/* Records of busy deliveries wait for their time; the others for their batch. */
		long long first = 0;
		for (int i = 0; i < dp->nresults; i++)
			if (dp->results[i].retry_ms > 0 &&
			    (first == 0 || dp->results[i].retry_ms < first))
				first = dp->results[i].retry_ms;
		if (first > 0 && !evtimer_pending(dp->write_timer, NULL)) {
			long long in = first - clock_monotonic_ms();
			struct timeval tv = {in / 1000, (in % 1000) * 1000};
			if (in < 0)
				tv = (struct timeval){0, 0};
			evtimer_add(dp->write_timer, &tv);
		}
		return;
	}
	long wait = delivery_write_wait_ms(ready,
					   (long)(clock_monotonic_ms() - dp->results[0].queued_ms),
					   dp->suspects, dp->state == DELIVERY_STOPPING);
	if (wait > 0) {
		if (!evtimer_pending(dp->write_timer, NULL)) {
			struct timeval tv = {0, wait * 1000};
			evtimer_add(dp->write_timer, &tv);
		}
		return;
	}
	evtimer_del(dp->write_timer);
	int n = delivery_write_take(dp->results, ready, dp->suspects);
	struct buf json = BUF_INIT;
	buf_putc(&json, '[');
	for (int i = 0; i < n; i++) {
		if (i)
			buf_putc(&json, ',');
		buf_append(&json, dp->results[i].json, dp->results[i].len);
	}
	buf_putc(&json, ']');
	const char *params[] = {dp->d->instance, json.data};
	dp->nwriting = n;
	write_set_state(dp, dp->suspects > 0 ? DELIVERY_WRITE_SINGLE : DELIVERY_WRITE_BATCH);
	pgc_query(dp->done,
		  "SELECT recorded, busy, missing FROM reghook.complete_deliveries($1, $2::json)",
		  2, params, on_written, dp);
	buf_free(&json);
}

static void on_write_timer(evutil_socket_t fd, short what, void *arg)
{
	write_results(arg);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	slots_forget_idle(arg);
	wake(arg);
}

static void on_reclaimed(struct pgc *c, PGresult *res, void *arg)
{
	struct delivery *dp = arg;
	if (pgc_ok(res) && PQntuples(res) == 1 && atoi(PQgetvalue(res, 0, 0)) > 0) {
		log_warn("%s deliveries had an expired lease and were queued again",
			 PQgetvalue(res, 0, 0));
		wake(dp);
	} else if (res && !pgc_ok(res)) {
		log_error("reclaiming expired leases: %s", pgc_error(res));
	}
}

static void on_reclaim(evutil_socket_t fd, short what, void *arg)
{
	struct delivery *dp = arg;
	if (dp->state == DELIVERY_WAITING || dp->state == DELIVERY_STOPPING || !pgc_is_up(dp->done))
		return;
	char max[16];
	snprintf(max, sizeof(max), "%lld", dp->d->cfg->max_attempts);
	const char *params[] = {max};
	pgc_query(dp->done, "SELECT reghook.reclaim_expired($1)", 1, params, on_reclaimed, dp);
}

static void on_listening(struct pgc *c, PGresult *res, void *arg)
{
	if (res && !pgc_ok(res))
		log_error("LISTEN reghook_deliveries: %s", pgc_error(res));
	wake(arg);
}

static void claim_up(struct pgc *c, void *arg)
{
	struct delivery *dp = arg;
	if (dp->state != DELIVERY_WAITING)
		pgc_query(c, "LISTEN reghook_deliveries", 0, NULL, on_listening, dp);
}

static void claim_down(struct pgc *c, const char *why, void *arg)
{
	step(arg, DELIVERY_EV_CLAIM_FAILED);
}

static void claim_notify(struct pgc *c, const char *channel, const char *payload, void *arg)
{
	log_debug("woken by %s", channel);
	wake(arg);
}

static void done_up(struct pgc *c, void *arg)
{
	struct delivery *dp = arg;
	write_results(dp);
	/* The start-up prune may have found this connection still down. */
	janitor_connected(dp->janitor);
}

static void claim_failed(struct pgc *c, enum pgc_failure what, void *arg)
{
	struct delivery *dp = arg;
	stats_database_failure(dp->d->stats, "claim", what == PGC_LOST);
}

static void done_failed(struct pgc *c, enum pgc_failure what, void *arg)
{
	struct delivery *dp = arg;
	stats_database_failure(dp->d->stats, "record", what == PGC_LOST);
}

static const struct pgc_hooks claim_hooks = {claim_up, claim_down, claim_notify, claim_failed};
static const struct pgc_hooks done_hooks = {done_up, NULL, NULL, done_failed};

static void on_stop_deadline(evutil_socket_t fd, short what, void *arg);

struct delivery *delivery_new(struct daemon *d)
{
	struct delivery *dp = xcalloc(1, sizeof(*dp));
	dp->d = d;
	LIST_INIT(&dp->running);
	dp->http = httpc_new(d->base, (long)d->cfg->max_in_flight);
	if (!dp->http)
		fatal("cannot initialise libcurl");
	if (!httpc_async_dns())
		log_warn("this libcurl resolves names synchronously: a slow DNS server will stall "
			 "the event loop");
	dp->claim = pgc_new(d->base, d->cfg->database_url, &claim_hooks, dp);
	dp->done = pgc_new(d->base, d->cfg->database_url, &done_hooks, dp);
	pgc_set_query_timeout(dp->claim, (int)d->cfg->db_timeout_ms);
	pgc_set_query_timeout(dp->done, (int)d->cfg->db_timeout_ms);
	pgc_set_statement_timeout(dp->claim, (int)d->cfg->db_timeout_ms);
	pgc_set_statement_timeout(dp->done, (int)d->cfg->db_timeout_ms);
	dp->poll = event_new(d->base, -1, EV_PERSIST, on_poll, dp);
	dp->write_timer = evtimer_new(d->base, on_write_timer, dp);
	dp->stop_timer = evtimer_new(d->base, on_stop_deadline, dp);
	dp->limited = true;
	dp->reclaim = event_new(d->base, -1, EV_PERSIST, on_reclaim, dp);
	struct timeval poll = {POLL_MS / 1000, (POLL_MS % 1000) * 1000};
	struct timeval reclaim = {RECLAIM_MS / 1000, (RECLAIM_MS % 1000) * 1000};
	event_add(dp->poll, &poll);
	event_add(dp->reclaim, &reclaim);
	dp->janitor = janitor_new(d, dp->done);
	dp->summary = event_new(d->base, -1, EV_PERSIST, on_summary, dp);
	struct timeval summary = {SUMMARY_MS / 1000, 0};
	event_add(dp->summary, &summary);
	return dp;
}

void delivery_schema_ready(struct delivery *dp)
{
	bool first = dp->state == DELIVERY_WAITING;
	step(dp, DELIVERY_EV_SCHEMA_READY);
	if (first && pgc_is_up(dp->claim))
		pgc_query(dp->claim, "LISTEN reghook_deliveries", 0, NULL, on_listening, dp);
	on_reclaim(-1, 0, dp);
	janitor_start(dp->janitor);
}

static void on_released(struct pgc *c, PGresult *res, void *arg)
{
	struct delivery *dp = arg;
	dp->releasing--;
	if (pgc_ok(res) && PQntuples(res) == 1)
		log_info("%s delivery(ies) given back to the queue", PQgetvalue(res, 0, 0));
	else
		log_warn("giving deliveries back to the queue: %s (they are sent again once their "
			 "leases run out)",
			 res ? pgc_error(res) : "database connection lost");
}

/*
 * The stop's deadline, request_timeout after it began, came with requests
 * still out: a webhook's own timeout may be up to a day, and the service
 * manager would kill the process at its own (90 s for the packaged unit),
 * leaving their deliveries leased until that day's lease ran out. They are
 * given up, and their deliveries given back to the queue with the attempt
 * they had not finished (release_deliveries()), for another instance, or
 * this one's next start, to send at once. A claim or an ingest batch's
 * offer out at the deadline may still start requests: those are given up
 * as they come, every STOP_GIVE_UP_MS until none is out.
 */
static void on_stop_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct delivery *dp = arg;
	if (dp->holders > 0) {
		struct timeval again = {0, STOP_GIVE_UP_MS * 1000};
		evtimer_add(dp->stop_timer, &again);
	}
	if (dp->in_flight == 0)
		return;
	struct buf ids = BUF_INIT;
	int n = 0;
	struct inflight *f;
	buf_putc(&ids, '{');
	while ((f = LIST_FIRST(&dp->running))) {
		LIST_REMOVE(f, link);
		buf_printf(&ids, "%s%s", n++ ? "," : "", request_delivery_id(f->req));
		CURL *easy = request_easy(f->req);
		if (easy)
			httpc_remove(dp->http, easy);
		slots_release(dp, f->webhook_id, false);
		request_free(f->req);
		gate_unref(f->gate);
		free(f);
	}
	buf_putc(&ids, '}');
	dp->in_flight = 0;
	stats_in_flight(dp->d->stats, 0);
	log_warn(
		"stopping: %d delivery request(s) still in flight after request_timeout (%lld ms); "
		"given up",
		n, dp->d->cfg->request_timeout_ms);
	if (pgc_is_up(dp->done)) {
		const char *params[] = {dp->d->instance, ids.data};
		dp->releasing++;
		pgc_query(dp->done, "SELECT reghook.release_deliveries($1, $2::uuid[])", 2, params,
			  on_released, dp);
	} else {
		log_warn("the database is not reachable: their deliveries are sent again once "
			 "their leases run out");
	}
	buf_free(&ids);
}

void delivery_stop(struct delivery *dp)
{
	step(dp, DELIVERY_EV_STOP);
	dp->stop_wait_ms = clock_monotonic_ms() + dp->d->cfg->db_timeout_ms;
	long long ms = dp->d->cfg->request_timeout_ms;
	struct timeval deadline = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(dp->stop_timer, &deadline);
	event_del(dp->poll);
	event_del(dp->reclaim);
	janitor_stop(dp->janitor);
	event_del(dp->summary);
	write_results(dp); /* what gathers is written now */
	if (dp->in_flight)
		log_info("waiting for %d delivery request(s) in flight", dp->in_flight);
}

void delivery_reconfigure(struct delivery *dp)
{
	httpc_set_max_connections(dp->http, (long)dp->d->cfg->max_in_flight);
	/* A higher limit has room now. */
	wake(dp);
}

bool delivery_busy(const struct delivery *dp)
{
	/*
	 * Results not written hold the stop up while the database is there,
	 * or, gone (a restart of PostgreSQL as the service manager stops
	 * reghook), for db_timeout after the stop began, for it to come back.
	 * A claim or an offer out holds it back too: what it leases is sent and
	 * recorded before the process ends, not left leased to nobody until
	 * the lease expires (a claim ends by db_timeout at the latest).
	 */
	/* Not records whose deliveries another transaction holds: their leases run out. */
	return dp->in_flight > 0 || dp->holders > 0 || dp->releasing > 0 ||
	       ((dp->nresults > dp->nbusy || dp->write_state != DELIVERY_WRITE_IDLE) &&
		(pgc_is_up(dp->done) || clock_monotonic_ms() < dp->stop_wait_ms));
}

void delivery_free(struct delivery *dp)
{
	if (!dp)
		return;
	struct inflight *f;
	while ((f = LIST_FIRST(&dp->running))) {
		LIST_REMOVE(f, link);
		CURL *easy = request_easy(f->req);
		if (easy)
			httpc_remove(dp->http, easy);
		request_free(f->req);
		gate_unref(f->gate);
		free(f);
	}
	httpc_free(dp->http);
	pgc_free(dp->claim);
	pgc_free(dp->done);
	event_free(dp->poll);
	event_free(dp->reclaim);
	event_free(dp->write_timer);
	event_free(dp->stop_timer);
	janitor_free(dp->janitor); /* after the connection it borrowed */
	/* The successes since the last summary are not lost at a stop. */
	if (dp->succeeded > 0)
		log_info("%ld %s succeeded since the last summary", dp->succeeded,
			 dp->succeeded == 1 ? "delivery" : "deliveries");
	event_free(dp->summary);
	if (dp->ndeferred > 0)
		log_warn("%d attempt record(s) not written: the database refused them (their "
			 "deliveries are sent again once their leases run out)",
			 dp->ndeferred);
	if (dp->nbusy > dp->ndeferred)
		log_warn("%d attempt record(s) not written: another transaction holds their "
			 "deliveries (tried again once their leases run out)",
			 dp->nbusy - dp->ndeferred);
	if (dp->nresults > dp->nbusy)
		log_warn("%d attempt record(s) not written: the database was not reachable "
			 "(their deliveries are sent again once their leases run out)",
			 dp->nresults - dp->nbusy);
	drop_results(dp, dp->nresults);
	free(dp->results);
	if (dp->claiming)
		free(dp->claiming->w);
	free(dp->claiming);
	free(dp->slots);
	free(dp);
}
