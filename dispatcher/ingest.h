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
/* Requests are waiting for an answer. */
bool ingest_busy(const struct ingest *in);

#endif
