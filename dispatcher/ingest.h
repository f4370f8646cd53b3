/*
 * ingest: POST /events, from request to committed rows.
 *
 * Each request is authenticated, parsed and classified at once; the events
 * to keep then wait in a queue, and once the requests read in one turn of
 * the event loop have joined it, an idle database connection of the ingest
 * pool takes the whole queue as one batch: one statement (reghook.ingest)
 * in one transaction, whatever the number of requests. So under load many
 * requests share each commit (group commit), and with no load a request
 * waits for nobody. While another batch runs, a connection waits for the
 * queue to be as full as that batch (or for that batch to turn slow), so
 * that batches stay large under load. A request is answered 200 only from
 * the callback of the statement that committed its events.
 */
#ifndef REGHOOK_INGEST_H
#define REGHOOK_INGEST_H

#include <stdbool.h>
#include <stddef.h>

struct daemon;
struct httpd_req;
struct ingest;

struct ingest *ingest_new(struct daemon *d);
void ingest_free(struct ingest *in);
/* Handles one POST /events. */
void ingest_handle(struct ingest *in, struct httpd_req *req);
/* The schema is current: batches may run. Also reloads the source cache. */
void ingest_schema_ready(struct ingest *in);
/* A registry source changed: reload the cache. */
void ingest_sources_changed(struct ingest *in);
/* The control connection went down: a change of the sources may be missed. */
void ingest_sources_stale(struct ingest *in);
/* Requests are waiting for an answer. */
bool ingest_busy(const struct ingest *in);
/*
 * Events can be stored now: the sources are loaded and ingest() has run on
 * a connection that is up. If not, warms up again the connections whose
 * warm-up failed.
 */
bool ingest_check_ready(struct ingest *in);

/*
 * The batching decisions, pure functions so that the unit tests
 * (tests/unit/test_ingest.c) can drive them without a server.
 */

#define INGEST_BATCH_MAX 1000		   /* events per statement */
#define INGEST_BATCH_MAX_BYTES (16u << 20) /* of events per statement */
#define INGEST_BATCH_SLOW_MS 20		   /* a batch running longer holds back no other */

/* A batch running on a connection: its events, and how long it has run. */
struct ingest_running {
	int events;
	long ran_ms;
};

/*
 * A batch costs the database nearly as much for a few events as for many,
 * so under load batches should be full. A batch starts on an idle
 * connection, with `queued` events waiting, when none runs (no load:
 * nobody waits for anybody), when the queue holds at least as many events
 * as the smallest running batch (the load is such that a second batch is
 * as full as the first) or a whole batch, or when a running batch has
 * taken INGEST_BATCH_SLOW_MS or more (waiting for a lock, say), which then
 * holds back no other. Returns 0 to start now, else the milliseconds after
 * which the first running batch turns slow.
 */
long ingest_batch_wait_ms(const struct ingest_running *running, int nrunning, int queued)
	__attribute__((warn_unused_result));

/*
 * Whether the next queued request (req_events events of req_bytes to store;
 * req_alone if it is retried alone) joins a batch that holds nreqs requests
 * and nitems events of bytes (batch_alone: its request is retried alone).
 * A batch takes at least one request, and at most INGEST_BATCH_MAX events
 * and INGEST_BATCH_MAX_BYTES unless its one request holds more; a request
 * retried alone runs alone.
 */
bool ingest_batch_takes(int nreqs, bool batch_alone, int nitems, size_t bytes, bool req_alone,
			int req_events, size_t req_bytes) __attribute__((warn_unused_result));

/* What a failed batch means for its requests. */
enum ingest_failure {
	INGEST_FAILURE_RETRY,	/* every request 503 with Retry-After: the database's fault */
	INGEST_FAILURE_SPLIT,	/* every request again, alone, in order, to find the culprit */
	INGEST_FAILURE_REFUSED, /* the batch's one request 400: its events are bad data */
};

/* Times a request is stored again, alone, after a foreign key violation. */
#define INGEST_AGAIN_MAX 3

/*
 * lost: the connection dropped during the batch (the commit may have
 * happened; event ids make the registry's retry harmless). sqlstate: the
 * error's SQLSTATE otherwise. nreqs: the batch's requests. again: how many
 * times its one request was stored again after a foreign key violation.
 * Such a violation is no request's fault: every id ingest() writes comes
 * from the database, so it means that a namespace, webhook or registry
 * source the batch read was removed before its commit. The request is
 * stored again, alone (the removal then seen), INGEST_AGAIN_MAX times at
 * most, then 503.
 */
enum ingest_failure ingest_batch_failure(bool lost, const char *sqlstate, int nreqs, int again)
	__attribute__((warn_unused_result));

#endif
