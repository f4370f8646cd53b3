/*
 * delivery: see delivery.h.
 *
 * DESIGN. Two database connections: `claim` (LISTEN reghook_deliveries,
 * claim_deliveries, reclaim_expired) and `done` (complete_deliveries), so a
 * slow write never delays the next claim. A claim asks for as many
 * deliveries as there are free slots, per webhook and in all, and every
 * claimed delivery starts at once, so a lease only ever covers a running
 * request. Finished attempts queue as JSON and are written as one batch
 * whenever the done connection is idle (group commit again); if that
 * connection drops, the batch is kept and written after the reconnect,
 * and if the process dies the leases expire and another dispatcher
 * retries: at-least-once. Claims pause while a full batch of records waits
 * for the one being written, so a slow database bounds what is held in
 * memory instead of letting records pile up.
 */
#include "delivery.h"
#include "buf.h"
#include "daemon.h"
#include "httpc.h"
#include "log.h"
#include "request.h"
#include "retry.h"
#include "stats.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_MS 1000	     /* backstop for missed NOTIFYs and due retries */
#define RECLAIM_MS 5000	     /* how often expired leases are looked for */
#define WRITE_BATCH_MAX 1000 /* attempt records per complete_deliveries() */
/*
 * Records carry response bodies (up to twice response_body_limit as hex),
 * so bytes are bounded too: a batch ends at WRITE_BATCH_BYTES, and claims
 * pause while HELD_BYTES_MAX of records wait.
 */
#define WRITE_BATCH_BYTES (16 * 1024 * 1024)
#define HELD_BYTES_MAX (32 * 1024 * 1024)
#define SUMMARY_MS 60000  /* how often successes are summed up in the log */
#define PRUNE_MS 600000	  /* how often old history is pruned */
#define PRUNE_BATCH "500" /* rows per prune_history() call */

struct inflight {
	struct inflight *prev, *next;
	struct dispatcher *dp;
	struct request *req; /* owned */
	long long webhook_id;
	int attempt;
	int round_start; /* attempts before the last retrigger: this round counts from here */
	int max_attempts;
};

struct webhook_slots {
	long long webhook_id;
	int in_flight;
};

struct dispatcher {
	struct daemon *d;      /* borrowed */
	struct pgc *claim;     /* owned */
	struct pgc *done;      /* owned */
	struct httpc *http;    /* owned */
	struct event *poll;    /* owned */
	struct event *reclaim; /* owned */
	struct event *prune;   /* owned: the janitor's timer */
	struct event *summary; /* owned: logs the successes of the last minute */
	long succeeded;	       /* deliveries succeeded since the last summary */
	bool started;	       /* the schema is current */
	bool claiming;	       /* a claim query is running */
	bool claim_again;      /* woken while claiming */
	int claim_asked;       /* deliveries the running claim may return */
	bool stopping;

	struct inflight *running; /* owned list */
	int in_flight;
	struct webhook_slots *slots; /* owned array */
	int nslots;

	/*
	 * Attempt records (JSON objects, each owned) waiting to be written,
	 * oldest first; the first nwriting are in the statement running now
	 * and leave the queue only when it succeeds.
	 */
	char **results;
	int nresults, cap_results;
	size_t results_bytes; /* the sum of their lengths */
	int nwriting;
	int one_by_one; /* after a refused batch: write these singly to find the culprit */
	bool write_busy;
};

static void claim(struct dispatcher *dp);
static void write_results(struct dispatcher *dp);

static struct webhook_slots *slots_for(struct dispatcher *dp, long long webhook_id)
{
	for (int i = 0; i < dp->nslots; i++)
		if (dp->slots[i].webhook_id == webhook_id)
			return &dp->slots[i];
	dp->slots = xrealloc(dp->slots, (size_t)(dp->nslots + 1) * sizeof(*dp->slots));
	dp->slots[dp->nslots] = (struct webhook_slots){webhook_id, 0};
	return &dp->slots[dp->nslots++];
}

/* Drops idle slot entries so the array tracks only busy webhooks. */
static void slots_release(struct dispatcher *dp, long long webhook_id)
{
	for (int i = 0; i < dp->nslots; i++) {
		if (dp->slots[i].webhook_id != webhook_id)
			continue;
		if (--dp->slots[i].in_flight <= 0)
			dp->slots[i] = dp->slots[--dp->nslots];
		return;
	}
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
static void log_attempt(struct dispatcher *dp, const struct inflight *f, const char *outcome,
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
	const char *hint = strcmp(cls, "blocked") == 0
				   ? " (set allow_private_targets = true to allow private targets)"
				   : "";
	log_warn("delivery %s (webhook %lld) attempt %d of %d %s: %s: %s%s; %s",
		 request_delivery_id(r), f->webhook_id, f->attempt - f->round_start,
		 f->max_attempts, strcmp(cls, "blocked") == 0 ? "refused" : "failed", cls,
		 request_error(r), hint, next);
}

static void on_summary(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *dp = arg;
	if (dp->succeeded > 0)
		log_info("%ld deliveries succeeded in the last minute", dp->succeeded);
	dp->succeeded = 0;
}

static void on_transfer_done(CURL *easy, CURLcode result, void *arg)
{
	struct inflight *f = arg;
	struct dispatcher *dp = f->dp;
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
		dp->results = xrealloc(dp->results, (size_t)dp->cap_results * sizeof(char *));
	}
	dp->results_bytes += record.len;
	dp->results[dp->nresults++] = buf_steal(&record);

	/* Unlink and free; curl has already let go of the handle. */
	if (f->prev)
		f->prev->next = f->next;
	else
		dp->running = f->next;
	if (f->next)
		f->next->prev = f->prev;
	dp->in_flight--;
	slots_release(dp, f->webhook_id);
	request_free(r);
	free(f);

	write_results(dp);
	claim(dp);
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

static void start_one(struct dispatcher *dp, PGresult *res, int row)
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
	};
	const char *max = col(res, row, "max_attempts");
	struct inflight *f = xcalloc(1, sizeof(*f));
	f->dp = dp;
	f->webhook_id = s.webhook_id;
	f->attempt = s.attempt;
	f->round_start = atoi(colz(res, row, "round_start"));
	f->max_attempts = max ? atoi(max) : (int)cfg->max_attempts;
	f->req = request_new(&s, cfg);
	f->next = dp->running;
	if (dp->running)
		dp->running->prev = f;
	dp->running = f;
	dp->in_flight++;
	slots_for(dp, f->webhook_id)->in_flight++;

	CURL *easy = request_easy(f->req);
	if (!easy || !httpc_add(dp->http, easy, on_transfer_done, f))
		on_transfer_done(easy, CURLE_FAILED_INIT, f);
}

static void on_claimed(struct pgc *c, PGresult *res, void *arg)
{
	struct dispatcher *dp = arg;
	if (!pgc_ok(res)) {
		dp->claiming = false;
		if (res)
			log_error("claiming deliveries: %s", pgc_error(res));
		return;
	}
	/*
	 * Still claiming while the rows start: one that fails at once ends in
	 * claim(), which must only note that, not count room without the rows
	 * not started yet.
	 */
	int n = PQntuples(res);
	for (int i = 0; i < n; i++)
		start_one(dp, res, i);
	dp->claiming = false;
	if (n > 0)
		log_debug("claimed %d deliveries (%d in flight)", n, dp->in_flight);
	/*
	 * A full claim means more may be due; so does a wake-up while we were
	 * busy. A short one took all that was due: what comes later is
	 * NOTIFYed, freed slots claim again, and retries come with the poll.
	 */
	if (n >= dp->claim_asked || dp->claim_again) {
		dp->claim_again = false;
		claim(dp);
	}
}

static void claim(struct dispatcher *dp)
{
	const struct config *cfg = dp->d->cfg;
	int room = (int)cfg->max_in_flight - dp->in_flight;

	if (!dp->started || dp->stopping || !pgc_is_up(dp->claim))
		return;
	if (dp->claiming) {
		dp->claim_again = true;
		return;
	}
	if (room <= 0 || dp->nresults - dp->nwriting >= WRITE_BATCH_MAX ||
	    dp->results_bytes >= HELD_BYTES_MAX)
		return;
	struct buf busy = BUF_INIT;
	buf_putc(&busy, '{');
	for (int i = 0; i < dp->nslots; i++)
		buf_printf(&busy, "%s\"%lld\":%d", i ? "," : "", dp->slots[i].webhook_id,
			   dp->slots[i].in_flight);
	buf_putc(&busy, '}');
	char total[16], per[16], timeout[24];
	snprintf(total, sizeof(total), "%d", room);
	snprintf(per, sizeof(per), "%lld", cfg->max_in_flight_per_webhook);
	snprintf(timeout, sizeof(timeout), "%lld", cfg->request_timeout_ms);
	const char *params[] = {dp->d->instance, total, per, busy.data, timeout};
	dp->claiming = true;
	dp->claim_asked = room;
	pgc_query(dp->claim, "SELECT * FROM reghook.claim_deliveries($1, $2, $3, $4, $5)", 5,
		  params, on_claimed, dp);
	buf_free(&busy);
}

/* Drops the first n results (written, or given up). */
static void drop_results(struct dispatcher *dp, int n)
{
	if (n == 0)
		return;
	for (int i = 0; i < n; i++) {
		dp->results_bytes -= strlen(dp->results[i]);
		free(dp->results[i]);
	}
	memmove(dp->results, dp->results + n, (size_t)(dp->nresults - n) * sizeof(char *));
	dp->nresults -= n;
}

static void on_written(struct pgc *c, PGresult *res, void *arg)
{
	struct dispatcher *dp = arg;
	int n = dp->nwriting;
	dp->write_busy = false;
	dp->nwriting = 0;
	if (!res) {
		/* Connection lost: the records stay queued and go after the reconnect. */
		log_warn("writing %d delivery attempts: connection lost; will retry", n);
		return;
	}
	if (!pgc_ok(res) && n > 1) {
		/* One bad record must not cost the others: write them one by one. */
		log_warn("writing %d delivery attempts: %s; retrying one by one", n,
			 pgc_error(res));
		dp->one_by_one = n;
	} else {
		if (!pgc_ok(res))
			/* Its lease expires and the delivery is tried again. */
			log_error("writing a delivery attempt: %s; record dropped", pgc_error(res));
		drop_results(dp, n);
		dp->one_by_one = dp->one_by_one > n ? dp->one_by_one - n : 0;
	}
	write_results(dp);
	claim(dp); /* it may have paused for this write */
}

static void write_results(struct dispatcher *dp)
{
	if (dp->write_busy || dp->nresults == 0 || !pgc_is_up(dp->done))
		return;
	int max = dp->one_by_one		   ? 1
		  : dp->nresults < WRITE_BATCH_MAX ? dp->nresults
						   : WRITE_BATCH_MAX;
	struct buf json = BUF_INIT;
	buf_putc(&json, '[');
	int n = 0;
	while (n < max && (n == 0 || json.len < WRITE_BATCH_BYTES)) {
		if (n)
			buf_putc(&json, ',');
		buf_puts(&json, dp->results[n++]);
	}
	buf_putc(&json, ']');
	const char *params[] = {dp->d->instance, json.data};
	dp->nwriting = n;
	dp->write_busy = true;
	pgc_query(dp->done, "SELECT reghook.complete_deliveries($1, $2::json)", 2, params,
		  on_written, dp);
	buf_free(&json);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	claim(arg);
}

static void on_reclaimed(struct pgc *c, PGresult *res, void *arg)
{
	struct dispatcher *dp = arg;
	if (pgc_ok(res) && PQntuples(res) == 1 && atoi(PQgetvalue(res, 0, 0)) > 0) {
		log_warn("%s deliveries had an expired lease and were queued again",
			 PQgetvalue(res, 0, 0));
		claim(dp);
	} else if (res && !pgc_ok(res)) {
		log_error("reclaiming expired leases: %s", pgc_error(res));
	}
}

static void on_reclaim(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *dp = arg;
	if (!dp->started || dp->stopping || !pgc_is_up(dp->done))
		return;
	char max[16];
	snprintf(max, sizeof(max), "%lld", dp->d->cfg->max_attempts);
	const char *params[] = {max};
	pgc_query(dp->done, "SELECT reghook.reclaim_expired($1)", 1, params, on_reclaimed, dp);
}

static void prune_step(struct dispatcher *dp);

/* The janitor: small batches, one after another, until nothing old is left. */
static void on_pruned(struct pgc *c, PGresult *res, void *arg)
{
	struct dispatcher *dp = arg;
	if (!pgc_ok(res)) {
		if (res)
			log_error("pruning history: %s", pgc_error(res));
		return;
	}
	if (atoi(PQgetvalue(res, 0, 0)) > 0)
		prune_step(dp);
}

static void prune_step(struct dispatcher *dp)
{
	if (!dp->started || dp->stopping || !pgc_is_up(dp->done))
		return;
	char retention[32];
	snprintf(retention, sizeof(retention), "%lld milliseconds",
		 dp->d->cfg->history_retention_ms);
	const char *params[] = {retention, PRUNE_BATCH};
	pgc_query(dp->done, "SELECT reghook.prune_history($1::interval, $2)", 2, params, on_pruned,
		  dp);
}

static void on_prune(evutil_socket_t fd, short what, void *arg)
{
	prune_step(arg);
}

static void on_listening(struct pgc *c, PGresult *res, void *arg)
{
	if (res && !pgc_ok(res))
		log_error("LISTEN reghook_deliveries: %s", pgc_error(res));
	claim(arg);
}

static void claim_up(struct pgc *c, void *arg)
{
	struct dispatcher *dp = arg;
	if (dp->started)
		pgc_query(c, "LISTEN reghook_deliveries", 0, NULL, on_listening, dp);
}

static void claim_down(struct pgc *c, const char *why, void *arg)
{
	struct dispatcher *dp = arg;
	dp->claiming = false;
}

static void claim_notify(struct pgc *c, const char *channel, const char *payload, void *arg)
{
	claim(arg);
}

static void done_up(struct pgc *c, void *arg)
{
	write_results(arg);
	/* The start-up prune may have found this connection still down. */
	prune_step(arg);
}

static const struct pgc_hooks claim_hooks = {claim_up, claim_down, claim_notify};
static const struct pgc_hooks done_hooks = {done_up, NULL, NULL};

struct dispatcher *dispatcher_new(struct daemon *d)
{
	struct dispatcher *dp = xcalloc(1, sizeof(*dp));
	dp->d = d;
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
	dp->poll = event_new(d->base, -1, EV_PERSIST, on_poll, dp);
	dp->reclaim = event_new(d->base, -1, EV_PERSIST, on_reclaim, dp);
	struct timeval poll = {POLL_MS / 1000, (POLL_MS % 1000) * 1000};
	struct timeval reclaim = {RECLAIM_MS / 1000, (RECLAIM_MS % 1000) * 1000};
	event_add(dp->poll, &poll);
	event_add(dp->reclaim, &reclaim);
	dp->prune = event_new(d->base, -1, EV_PERSIST, on_prune, dp);
	struct timeval prune = {PRUNE_MS / 1000, 0};
	event_add(dp->prune, &prune);
	dp->summary = event_new(d->base, -1, EV_PERSIST, on_summary, dp);
	struct timeval summary = {SUMMARY_MS / 1000, 0};
	event_add(dp->summary, &summary);
	return dp;
}

void dispatcher_schema_ready(struct dispatcher *dp)
{
	bool first = !dp->started;
	dp->started = true;
	if (first && pgc_is_up(dp->claim))
		pgc_query(dp->claim, "LISTEN reghook_deliveries", 0, NULL, on_listening, dp);
	on_reclaim(-1, 0, dp);
	if (first)
		prune_step(dp);
}

void dispatcher_stop(struct dispatcher *dp)
{
	dp->stopping = true;
	event_del(dp->poll);
	event_del(dp->reclaim);
	event_del(dp->prune);
	event_del(dp->summary);
	if (dp->in_flight)
		log_info("waiting for %d delivery request(s) in flight", dp->in_flight);
}

int dispatcher_in_flight(const struct dispatcher *dp)
{
	return dp->in_flight;
}

void dispatcher_reconfigure(struct dispatcher *dp)
{
	httpc_set_max_connections(dp->http, (long)dp->d->cfg->max_in_flight);
	/* A higher limit has room now. */
	claim(dp);
}

bool dispatcher_busy(const struct dispatcher *dp)
{
	/* Results that cannot be written (database gone) do not hold the stop up. */
	return dp->in_flight > 0 || ((dp->nresults > 0 || dp->write_busy) && pgc_is_up(dp->done));
}

void dispatcher_free(struct dispatcher *dp)
{
	if (!dp)
		return;
	while (dp->running) {
		struct inflight *f = dp->running;
		dp->running = f->next;
		CURL *easy = request_easy(f->req);
		if (easy)
			httpc_remove(dp->http, easy);
		request_free(f->req);
		free(f);
	}
	httpc_free(dp->http);
	pgc_free(dp->claim);
	pgc_free(dp->done);
	event_free(dp->poll);
	event_free(dp->reclaim);
	event_free(dp->prune);
	/* The successes since the last summary are not lost at a stop. */
	if (dp->succeeded > 0)
		log_info("%ld deliveries succeeded since the last summary", dp->succeeded);
	event_free(dp->summary);
	drop_results(dp, dp->nresults);
	free(dp->results);
	free(dp->slots);
	free(dp);
}
