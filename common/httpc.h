/*
 * httpc: libcurl's multi interface driven by a libevent loop (the
 * multi_socket pattern): curl tells us which sockets to watch and when its
 * timeout runs out; libevent tells curl when they are ready. Transfers run
 * concurrently on one thread, reuse connections, and never block the loop
 * (name resolution uses curl's threaded resolver).
 *
 * The owner adds configured easy handles with a completion callback; the
 * callback runs once per handle, after the handle has been removed from
 * the multi handle, so it may clean the handle up or reuse it.
 */
#ifndef REGHOOK_HTTPC_H
#define REGHOOK_HTTPC_H

#include <curl/curl.h>
#include <event2/event.h>
#include <stdbool.h>

struct httpc;

typedef void (*httpc_done_fn)(CURL *easy, CURLcode result, void *arg);

/* NULL if curl cannot be set up (fatal at start-up for the caller). */
struct httpc *httpc_new(struct event_base *base, long max_connections);
/* Changes the connection limit given to httpc_new(); running transfers keep theirs. */
void httpc_set_max_connections(struct httpc *h, long max_connections);
/* Transfers still running are dropped without their callbacks. */
void httpc_free(struct httpc *h);
/* Starts a transfer. The handle's CURLOPT_PRIVATE is taken by httpc. */
bool httpc_add(struct httpc *h, CURL *easy, httpc_done_fn done, void *arg)
	__attribute__((warn_unused_result));
/* Stops a transfer without its callback (the caller still owns the handle). */
void httpc_remove(struct httpc *h, CURL *easy);
int httpc_running(const struct httpc *h);
/* True if this libcurl resolves names without blocking. */
bool httpc_async_dns(void);

#endif
