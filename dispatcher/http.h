/*
 * http: the daemon's HTTP routes, as one const table (see http.c): POST
 * /events to ingest, POST /callback/ to callback, the health checks and
 * GET /metrics. serve.c creates the server and applies reloads through
 * these two calls; the handlers answer with httpd_reply*() and reply.h.
 */
#ifndef REGHOOK_HTTP_H
#define REGHOOK_HTTP_H

struct daemon;

/* Creates d->http with the daemon's routes. */
void http_init(struct daemon *d);

/* Applies a reloaded configuration to the HTTP server. */
void http_reconfigure(struct daemon *d);

#endif
