/*
 * daemon: the context of `reghook serve`, passed to every module of the
 * daemon instead of globals. serve.c owns its lifecycle: start-up,
 * the control connection (migrations, readiness, LISTEN), reloads and the
 * stop.
 *
 * The configuration is replaced whole on reload (SIGHUP) and the old one
 * freed at once. So no module keeps a pointer into *cfg past the function
 * that read it: read d->cfg when the value is needed, and copy what must
 * outlive a callback (a delivery request copies its timeouts and limits
 * when it starts, pgc copies its conninfo).
 */
#ifndef REGHOOK_DAEMON_H
#define REGHOOK_DAEMON_H

#include "config.h"
#include "pgc.h"

#include <event2/event.h>
#include <stdbool.h>

struct httpd;
struct ingest;
struct delivery;
struct stats;
struct poolcheck;
struct migrate;

struct daemon {
	struct event_base *base; /* owned */
	struct config *cfg;	 /* owned; replaced whole by a reload */
	int argc;		 /* the command line as serve got it, for reloads */
	char **argv;		 /* owned array; the strings borrowed from main */
	char instance[CONFIG_INSTANCE_NAME_MAX + 1]; /* instance name in leases and history */

	struct pgc *control; /* owned: migrations, readiness, LISTEN */
	int callbacks;	     /* POST /callback records under way on it */
	/* GET /readyz requests waiting for the one readiness query in flight */
	struct httpd_req **readyz_waiting; /* owned array */
	size_t readyz_n, readyz_cap;
	bool readyz_asked;	     /* its query is out */
	struct event *readyz_timer;  /* owned: answers them if it is out too long */
	bool schema_ok;		     /* migrations applied on the current control session */
	struct poolcheck *poolcheck; /* owned: the start-up check for a pooler, while it runs */
	bool pool_checked;	     /* it found every connection keeps its session */
	bool refused;		     /* it found otherwise: the daemon stops, exit status 1 */
	struct event *migrate_retry; /* owned: the next try after a failed migration */
	struct migrate *migration;   /* owned while it runs on the control connection */
	int migrate_backoff_ms;	     /* its wait: 1 s, doubling up to a minute */

	struct httpd *http;	   /* owned: the receiver's HTTP server */
	struct ingest *ingest;	   /* owned: POST /events */
	struct delivery *delivery; /* owned: outbound deliveries */
	struct stats *stats;	   /* owned: GET /metrics */

	struct event *sigint, *sigterm, *sighup; /* owned */
	struct event *stop_timer;		 /* owned: polls for a clean stop */
	bool stopping;
	int idle_ticks;	 /* stop_timer ticks with no work and no request, while stopping */
	bool ready_told; /* READY=1 went to the service manager */
};

/*
 * The receiver can store events again (a connection of it ran ingest()):
 * READY=1, if the schema is current.
 */
void daemon_receiver_ready(struct daemon *d);

#endif
