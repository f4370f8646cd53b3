/*
 * sources: the receiver's cache of registry sources (who may post events),
 * loaded from reghook.registry_sources and reloaded when that table changes
 * (a trigger NOTIFYs reghook_sources). Tokens are kept only as SHA-256
 * hashes, and a presented token is compared with every cached hash in
 * constant time, so neither the table nor the timing gives a token away.
 */
#ifndef REGHOOK_SOURCES_H
#define REGHOOK_SOURCES_H

#include "pgc.h"

#include <stdbool.h>

struct sources;

struct event_base;

/* A load that fails is tried again on base's timer, from 1 s to every 30 s. */
struct sources *sources_new(struct event_base *base);
void sources_free(struct sources *s);
/* Queues a reload on c; the cache answers from the old rows until it lands. */
void sources_reload(struct sources *s, struct pgc *c);
/*
 * The rows may be out of date: the connection that hears of changes went
 * down, so a NOTIFY may have been missed. Not ready until a reload lands.
 */
void sources_stale(struct sources *s);
/* Loaded, and not stale since. */
bool sources_ready(const struct sources *s);
/*
 * Checks an Authorization header value ("Bearer <token>"). On success sets
 * *id and *name (borrowed until the next reload completes).
 */
bool sources_authenticate(const struct sources *s, const char *authorization, long long *id,
			  const char **name) __attribute__((warn_unused_result));

#endif
