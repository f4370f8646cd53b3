/*
 * stats: reghook's metrics, as served on GET /metrics. Declares the metric
 * families once (names, help, labels, buckets) on a common/metrics
 * registry, and gives the daemon's modules one-line hooks to count what
 * they do: events by outcome, delivery attempts, HTTP answers, reloads.
 * The engines publish their gauges of the moment (deliveries in flight,
 * events queued and storing) here as they change, so that this module
 * reads neither engine; whether the database is up is read at each
 * scrape; the queue depth, which lives in PostgreSQL, is counted there
 * every few seconds on the control connection and served from that cache,
 * so a scrape never waits for the database.
 */
#ifndef REGHOOK_STATS_H
#define REGHOOK_STATS_H

#include "buf.h"

#include <stdbool.h>

struct daemon;
struct stats;

struct stats *stats_new(struct daemon *d);
void stats_free(struct stats *s);

/* n events of POST /events had this outcome: accepted, duplicate, rejected, unrouted, ignored. */
void stats_events(struct stats *s, const char *outcome, int n);
/*
 * One delivery attempt ended: outcome as recorded (succeeded, retry, failed,
 * gone), its failure class (NULL for a success) and how long it took.
 */
void stats_attempt(struct stats *s, const char *outcome, const char *error_class, double seconds);
/*
 * A database connection of the daemon failed: connection is receiver,
 * claim, record or control; lost: it dropped while up, else a statement
 * was refused.
 */
void stats_database_failure(struct stats *s, const char *connection, bool lost);
/* The delivery engine's requests running now. */
void stats_in_flight(struct stats *s, int n);
/* POST /events: events waiting for a batch, and events inside running batches. */
void stats_ingest_queue(struct stats *s, int queued, int storing);
/* An HTTP answer was sent. route is the routes table's path, or "other". */
void stats_http(struct stats *s, const char *route, const char *method, int code);
/* A reload (SIGHUP) succeeded or was refused. */
void stats_reload(struct stats *s, bool ok);
/* Writes every metric in the Prometheus text format. */
void stats_write(struct stats *s, struct buf *out);

#endif
