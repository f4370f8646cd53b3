/*
 * daemon: the context of `reghook serve`, passed to every module of the
 * daemon instead of globals. serve.c owns its lifecycle: start-up,
 * the control connection (migrations, readiness, LISTEN) and the stop.
 */
#ifndef REGHOOK_DAEMON_H
#define REGHOOK_DAEMON_H

#include "config.h"
#include "pgc.h"

#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>

struct ingest;
struct dispatcher;

struct daemon {
	struct event_base *base; /* owned */
	struct config *cfg;	 /* borrowed from main */
	char instance[128];	 /* instance name in leases and history */

	struct pgc *control; /* owned: migrations, readiness, LISTEN */
	bool schema_ok;	     /* migrations applied on the current control session */

	struct evhttp *http;		      /* owned */
	struct evhttp_bound_socket *listener; /* owned by http */
	struct ingest *ingest;		      /* owned: POST /events */
	struct dispatcher *dispatcher;	      /* owned: outbound deliveries */

	struct event *sigint, *sigterm; /* owned */
	struct event *stop_timer;	/* owned: polls for a clean stop */
	bool stopping;
};

/* Registers the HTTP routes on d->http (http.c). */
bool http_routes_init(struct daemon *d) __attribute__((warn_unused_result));

/* Sends a JSON body with the status; body is a complete JSON text. */
void http_reply_json(struct evhttp_request *req, int status, const char *body);
/* Sends {"error": message} with the status. */
void http_reply_error(struct evhttp_request *req, int status, const char *message);

#endif
