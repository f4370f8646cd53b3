/*
 * delivery: the outbound worker pool. Claims due deliveries from
 * PostgreSQL in batches (woken by NOTIFY, with a slow poll as a backstop),
 * sends each as an HTTP request through httpc (libcurl multi on the same
 * event loop), and writes the attempts back in batches. Limits: at most
 * max_in_flight requests in all, max_in_flight_per_webhook to one webhook,
 * so one slow endpoint never holds back another.
 */
#ifndef REGHOOK_DELIVERY_H
#define REGHOOK_DELIVERY_H

#include <stdbool.h>

struct daemon;
struct dispatcher;

struct dispatcher *dispatcher_new(struct daemon *d);
void dispatcher_free(struct dispatcher *dp);
/* The schema is current: start claiming. */
void dispatcher_schema_ready(struct dispatcher *dp);
/* Stop claiming; requests in flight finish and are recorded. */
void dispatcher_stop(struct dispatcher *dp);
/* The configuration was replaced: apply the new limits. */
void dispatcher_reconfigure(struct dispatcher *dp);
/* Requests in flight or results not yet written. */
bool dispatcher_busy(const struct dispatcher *dp);

#endif
