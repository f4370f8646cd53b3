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
struct delivery;

struct delivery *delivery_new(struct daemon *d);
void delivery_free(struct delivery *dp);
/* The schema is current: start claiming. */
void delivery_schema_ready(struct delivery *dp);
/* Stop claiming; requests in flight finish and are recorded. */
void delivery_stop(struct delivery *dp);
/* The configuration was replaced: apply the new limits. */
void delivery_reconfigure(struct delivery *dp);
/* Requests in flight or results not yet written. */
bool delivery_busy(const struct delivery *dp);

#endif
