/*
 * serve: `reghook serve`, the daemon. One libevent loop carries the HTTP
 * receiver, the database connections and (in later modules) the delivery
 * workers. A control connection applies the migrations whenever it
 * connects, so a daemon started before its database comes up, or a
 * database restored from an old dump, is brought current without a restart.
 * SIGINT and SIGTERM stop it: no new requests, what is running finishes,
 * then the loop ends. SIGHUP reloads the configuration (config.c says which
 * keys need a restart instead); connections and requests in flight carry
 * on. With tls_cert_file the receiver speaks HTTPS: the certificate and key
 * are read at start (a bad one stops it) and again at every reload, whose
 * new context serves new connections while open ones keep theirs (a bad
 * one fails the reload, and the running one stays).
 * A service manager hears of all this through sdnotify: READY once the
 * listener is bound, the schema current and the receiver able to store
 * events (as /readyz), RELOADING then READY around a
 * reload, STOPPING at the stop.
 */
#include "buf.h"
#include "cli.h"
#include "daemon.h"
#include "delivery.h"
#include "http.h"
#include "httpd.h"
#include "ingest.h"
#include "log.h"
#include "migrate.h"
#include "poolcheck.h"
#include "sdnotify.h"
#include "stats.h"
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_listening(struct pgc *c, PGresult *res, void *arg)
{
	if (!pgc_ok(res) && res)
		log_error("LISTEN failed: %s", pgc_error(res));
}

/* READY=1 with a status line; the first time, it ends the manager's start-up wait. */
static void tell_ready(struct daemon *d, const char *what)
{
	char msg[512];
	/* A reload while the database is away says so, not that it serves. */
	if (pgc_is_up(d->control) && d->schema_ok)
		snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s; serving on %s://%s", what,
			 config_tls(d->cfg) ? "https" : "http", d->cfg->listen);
	else
		snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s; waiting for the database", what);
	if (!sdnotify_send(msg))
		log_warn("cannot notify the service manager: %s", strerror(errno));
	d->ready_told = true;
}

#define MIGRATE_BACKOFF_MIN_MS 1000
#define MIGRATE_BACKOFF_MAX_MS 60000

/*
 * A failed migration is tried again, after 1 s, doubling up to a minute:
 * many failures pass (a deadlock with the statements of an instance still
 * running the old schema, a lock held by a person, a server being
 * upgraded), and a daemon that waited for a restart would stay unready.
 */
static void on_migrated(bool ok, const char *error, int applied, void *arg)
{
	struct daemon *d = arg;
	d->migration = NULL; /* freed once this returns */
	if (!ok) {
		int wait = d->migrate_backoff_ms;
		log_error("schema migration failed: %s; trying again in %d s", error, wait / 1000);
		d->schema_ok = false;
		sdnotify_status("schema migration failed: %s", error);
		if (!d->stopping) {
			struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
			evtimer_add(d->migrate_retry, &tv);
		}
		d->migrate_backoff_ms =
			wait * 2 > MIGRATE_BACKOFF_MAX_MS ? MIGRATE_BACKOFF_MAX_MS : wait * 2;
		return;
	}
	d->migrate_backoff_ms = MIGRATE_BACKOFF_MIN_MS;
	if (applied)
		log_info("schema migrated: %d migration(s) applied", applied);
	d->schema_ok = true;
	/* Told of every change to registry sources from now on. */
	pgc_query(d->control, "LISTEN reghook_sources", 0, NULL, on_listening, d);
	ingest_schema_ready(d->ingest);
	delivery_schema_ready(d->delivery);
	/* Else when a receiver connection has run ingest() (daemon_receiver_ready). */
	if (ingest_check_ready(d->ingest))
		daemon_receiver_ready(d);
}

void daemon_receiver_ready(struct daemon *d)
{
	if (!d->stopping && d->schema_ok)
		tell_ready(d, "database connected, schema current");
}

/*
 * Behind a pooler that hands server sessions around per transaction, the
 * LISTENs and the deliveries' wake-ups would silently break: refuse to run at all, once, at start.
 */
static void on_pool_checked(bool shared, const char *detail, void *arg)
{
	struct daemon *d = arg;
	poolcheck_free(d->poolcheck);
	d->poolcheck = NULL;
	if (shared) {
		log_error("database_url leads to a connection pooler in transaction (or statement) "
			  "pooling mode: %s. reghook needs a server session of its own per "
			  "connection: it LISTENs for new deliveries and registry sources, and "
			  "relies on session state. Use pool_mode = session for this database "
			  "(PgBouncer), or "
			  "connect to PostgreSQL directly; not starting",
			  detail);
		d->refused = true;
		event_base_loopexit(d->base, NULL);
		return;
	}
	log_debug("connection pooling check: %s", detail);
	d->pool_checked = true;
	if (pgc_is_up(d->control))
		d->migration = migrate_run(d->control, on_migrated, d);
}

static void on_migrate_retry(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	/* A connection down now runs the migrations when it comes back (control_up). */
	if (!d->stopping && d->pool_checked && pgc_is_up(d->control))
		d->migration = migrate_run(d->control, on_migrated, d);
}

static void control_up(struct pgc *c, void *arg)
{
	struct daemon *d = arg;
	log_info("database connected");
	evtimer_del(d->migrate_retry);
	if (d->pool_checked)
		d->migration = migrate_run(c, on_migrated, d);
	else if (!d->poolcheck)
		d->poolcheck = poolcheck_start(d->base, d->cfg->database_url,
					       (int)d->cfg->db_timeout_ms, on_pool_checked, d);
}

static void control_down(struct pgc *c, const char *why, void *arg)
{
	struct daemon *d = arg;
	/* pgc logged the loss of a connection that was up. */
	log_debug("database not reachable: %s", why);
	if (!d->stopping)
		sdnotify_status("waiting for the database: %s", why);
	d->schema_ok = false;
	/* Tokens changed while it is down are not heard of: the receiver takes
	 * none until the sources are read again once it is back. */
	ingest_sources_stale(d->ingest);
}

static void control_notify(struct pgc *c, const char *channel, const char *payload, void *arg)
{
	struct daemon *d = arg;
	if (strcmp(channel, "reghook_sources") == 0)
		ingest_sources_changed(d->ingest);
}

static void control_failed(struct pgc *c, enum pgc_failure what, void *arg)
{
	struct daemon *d = arg;
	stats_database_failure(d->stats, "control", what == PGC_LOST);
}

static const struct pgc_hooks control_hooks = {control_up, control_down, control_notify,
					       control_failed};

static void check_stopped(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	/* and the callbacks being recorded while their connection is up (when
	 * it went down they were answered 503); not a migration waiting for
	 * another instance's. */
	if (ingest_busy(d->ingest) || delivery_busy(d->delivery) ||
	    (pgc_is_up(d->control) && d->callbacks > 0)) {
		d->idle_ticks = 0;
		return;
	}
	/*
	 * Idle for a whole tick: the answers queued meanwhile (the last
	 * batch's 200s, 503s to kept-alive connections) have been written.
	 */
	if (++d->idle_ticks < 2)
		return;
	event_base_loopexit(d->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	if (d->stopping) {
		log_warn("second signal: stopping now");
		event_base_loopexit(d->base, NULL);
		return;
	}
	log_info("%s received: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
	d->stopping = true;
	sdnotify_send("STOPPING=1\nSTATUS=stopping: finishing the requests in flight");
	/*
	 * No new connections; requests already read are answered. Only the
	 * listener goes: freeing the server here would free requests that
	 * batches still hold.
	 */
	httpd_stop_listening(d->http);
	delivery_stop(d->delivery);
	struct timeval tick = {0, 50000};
	event_add(d->stop_timer, &tick);
}

/*
 * The TLS context of cfg's files into *ctx, or NULL when TLS is off; false
 * with err ("FILE: reason") when they do not load. A certificate out of
 * its validity period is served at start, with a warning: clients that
 * verify it refuse it with a clear error of their own, and everything else
 * (/healthz, /metrics, a renewal by reload) keeps working. On a reload it
 * is refused, as a renewal gone wrong, and the running one kept.
 */
__attribute__((warn_unused_result)) static bool tls_load(const struct config *cfg, bool reload,
							 SSL_CTX **ctx, char *err, size_t errlen)
{
	*ctx = NULL;
	if (!config_tls(cfg))
		return true;
	*ctx = tls_server_new(cfg->tls_cert_file, cfg->tls_key_file, cfg->tls_client_ca_file, err,
			      errlen);
	if (!*ctx)
		return false;
	char what[1024];
	enum tls_validity v = tls_server_validity(*ctx, what, sizeof(what));
	if (v == TLS_VALID) {
		log_info("TLS certificate %s loaded: %s%s", cfg->tls_cert_file, what,
			 *cfg->tls_client_ca_file ? "; client certificates required" : "");
		return true;
	}
	const char *state = v == TLS_EXPIRED ? "has expired" : "is not valid yet";
	if (reload) {
		snprintf(err, errlen, "%s: the certificate %s (%s)", cfg->tls_cert_file, state,
			 what);
		SSL_CTX_free(*ctx);
		*ctx = NULL;
		return false;
	}
	log_warn("TLS certificate %s %s (%s): clients that verify it refuse to connect; "
		 "install a valid one and reload",
		 cfg->tls_cert_file, state, what);
	return true;
}

/* config_reload's check: the files of the new configuration must load. */
static bool reload_tls(const struct config *fresh, char *err, size_t errlen, void *arg)
{
	return tls_load(fresh, true, arg, err, errlen);
}

/*
 * SIGHUP: the new configuration replaces the old whole (see daemon.h);
 * what already runs keeps the values it started with.
 */
static void on_reload(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	if (d->stopping)
		return;
	log_info("SIGHUP received: reloading the configuration");
	/* Before READY the manager has no reload to wait for. */
	bool told = d->ready_told;
	if (told)
		sdnotify_reloading("reloading the configuration");
	SSL_CTX *tls = NULL;
	struct config *fresh = config_reload(d->cfg, d->argc, d->argv, reload_tls, &tls);
	stats_reload(d->stats, fresh != NULL);
	if (fresh) {
		config_free(d->cfg);
		free(d->cfg);
		d->cfg = fresh;
		httpd_set_tls(d->http, tls);
		SSL_CTX_free(tls);
		http_reconfigure(d);
		delivery_reconfigure(d->delivery);
	}
	const char *result = fresh ? "configuration reloaded"
				   : "configuration reload failed, running configuration kept";
	if (told)
		tell_ready(d, result);
	else
		sdnotify_status("%s; waiting for the database", result);
}

static bool listen_on(struct daemon *d)
{
	char host[256];
	const char *listen = d->cfg->listen;
	if (!config_listen_host(listen, host, sizeof(host)))
		return false; /* not so: the configuration's check */
	int port = atoi(strrchr(listen, ':') + 1);
	char err[256];
	if (!httpd_listen(d->http, host, port, err, sizeof(err))) {
		log_error("cannot listen on %s: %s", listen, err);
		return false;
	}
	log_info("listening on %s://%s", config_tls(d->cfg) ? "https" : "http", listen);
	if (config_public_url_unreachable(d->cfg))
		log_warn("public_url is not set: callback_url and the registry snippet name %s, "
			 "which no endpoint or registry can reach; set public_url to the address "
			 "they reach reghook at",
			 listen);
	return true;
}

static void daemon_free(struct daemon *d)
{
	httpd_free(d->http);
	ingest_free(d->ingest);
	delivery_free(d->delivery);
	pgc_free(d->control);
	migrate_abandon(d->migration); /* its queries went with the connection */
	free(d->readyz_waiting);
	poolcheck_free(d->poolcheck);
	stats_free(d->stats);
	if (d->sigint)
		event_free(d->sigint);
	if (d->sigterm)
		event_free(d->sigterm);
	if (d->sighup)
		event_free(d->sighup);
	if (d->stop_timer)
		event_free(d->stop_timer);
	if (d->migrate_retry)
		event_free(d->migrate_retry);
	if (d->readyz_timer)
		event_free(d->readyz_timer);
	if (d->base)
		event_base_free(d->base);
	if (d->cfg) {
		config_free(d->cfg);
		free(d->cfg);
	}
	free(d->argv);
}

static int cmd_serve(const struct cli_command *cmd, int argc, char **argv)
{
	struct daemon d;
	int rc = CLI_FAILED;

	if (cli_wants_help(cmd, argc, argv))
		return CLI_OK;
	memset(&d, 0, sizeof(d));
	/* A reload reads the same flags again: keep them before they are consumed. */
	d.argc = argc;
	d.argv = xcalloc((size_t)argc + 1, sizeof(char *));
	memcpy(d.argv, argv, (size_t)argc * sizeof(char *));
	d.cfg = xcalloc(1, sizeof(*d.cfg));
	if (!cli_config(cmd, d.cfg, &argc, argv)) {
		free(d.cfg);
		d.cfg = NULL;
		daemon_free(&d);
		return CLI_USAGE;
	}
	if (argc > 1) {
		daemon_free(&d);
		return cli_usage_error(cmd, "unexpected argument '%s'", argv[1]);
	}

	const struct config *cfg = d.cfg;
	if (*cfg->instance_name) {
		snprintf(d.instance, sizeof(d.instance), "%s", cfg->instance_name);
	} else {
		/* A host name may hold 64 bytes, and any: printable UTF-8 goes to the database. */
		char host[HOST_NAME_MAX + 1] = "localhost";
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		text_printable(host);
		snprintf(d.instance, sizeof(d.instance), "%s:%d", host, (int)getpid());
	}
	signal(SIGPIPE, SIG_IGN);
	d.base = event_base_new();
	if (!d.base)
		fatal("cannot create the event loop");
	d.stats = stats_new(&d);
	d.ingest = ingest_new(&d);
	d.delivery = delivery_new(&d);
	d.control = pgc_new(d.base, cfg->database_url, &control_hooks, &d);
	pgc_set_query_timeout(d.control, (int)cfg->db_timeout_ms);
	d.sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
	d.sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
	d.sighup = evsignal_new(d.base, SIGHUP, on_reload, &d);
	d.stop_timer = event_new(d.base, -1, EV_PERSIST, check_stopped, &d);
	d.migrate_retry = evtimer_new(d.base, on_migrate_retry, &d);
	d.migrate_backoff_ms = MIGRATE_BACKOFF_MIN_MS;
	event_add(d.sigint, NULL);
	event_add(d.sigterm, NULL);
	event_add(d.sighup, NULL);

	http_init(&d);
	char err[1024];
	SSL_CTX *tls;
	if (!tls_load(cfg, false, &tls, err, sizeof(err))) {
		log_error("cannot serve HTTPS: %s", err);
		goto failed;
	}
	httpd_set_tls(d.http, tls);
	SSL_CTX_free(tls);
	if (!listen_on(&d))
		goto failed;
	sdnotify_status("connecting to the database");
	log_info("reghook %s serving as %s", REGHOOK_VERSION, d.instance);
	event_base_dispatch(d.base);
	log_info("stopped");
	rc = d.refused ? CLI_FAILED : CLI_OK;
failed:
	daemon_free(&d);
	return rc;
}

const struct cli_command cmd_serve_entry = {
	.name = "serve",
	.run = cmd_serve,
	.usage = "serve [--config FILE] [--KEY VALUE ...]",
	.help = "run the daemon: receiver, delivery workers, janitor",
};
