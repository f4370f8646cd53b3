/*
 * config: reghook's settings, described once in a const table (config.c)
 * that feeds the parser, `reghook --help` and the README's table.
 */
#ifndef REGHOOK_CONFIG_H
#define REGHOOK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "netguard.h"

#define CONFIG_MAX_RETRY_STEPS 32
#define CONFIG_MAX_PRIVATE_NETS 32
/* instance_name's bytes, within struct daemon's instance[] */
#define CONFIG_INSTANCE_NAME_MAX 127
/* A longer delay means nothing to a delivery (a webhook failing 5 days is disabled). */
#define CONFIG_MAX_RETRY_STEP_MS (30LL * 24 * 3600 * 1000)

struct buf;

struct config {
	char *database_url;
	char *listen;
	char *public_url;
	char *tls_cert_file;
	char *tls_key_file;
	char *tls_client_ca_file;
	char *registry_url;
	long long max_in_flight;
	long long max_in_flight_per_webhook;
	long long request_timeout_ms;
	long long connect_timeout_ms;
	long long max_attempts;
	char *retry_schedule;
	bool allow_private_targets;
	char *allow_private_networks;
	long long max_request_body;
	long long client_timeout_ms;
	long long response_body_limit;
	long long history_retention_ms;
	char *log_level;
	char *log_format;
	long long db_connections;
	long long db_timeout_ms;
	long long max_events_per_envelope;
	char *instance_name; /* at most CONFIG_INSTANCE_NAME_MAX bytes of printable UTF-8 */

	/* Derived after loading. */
	int retry_steps;
	long long retry_ms[CONFIG_MAX_RETRY_STEPS];
	int private_nets_n;
	struct netguard_net private_nets[CONFIG_MAX_PRIVATE_NETS];
};

/*
 * Loads the configuration for a command from defaults, file, environment and
 * flags (consuming the flags it knows from argv). On a bad value prints one
 * line naming the key and returns false; the caller exits 2.
 */
/*
 * Says what is wrong with the configuration: "reghook: configuration: ..."
 * on stderr, or a log line under log_format = json (so that a collector
 * that reads JSON lines gets it too; config_load sets the format even when
 * it fails).
 */
void config_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool config_load(struct config *cfg, int *argc, char **argv) __attribute__((warn_unused_result));
/* What a reload must also pass: false refuses fresh, with the reason in err. */
typedef bool (*config_check_fn)(const struct config *fresh, char *err, size_t errlen, void *arg);
/*
 * Loads the configuration again as at start: defaults, the same file,
 * the environment, then the start-up flags (argc/argv as the command got
 * them, before config_load consumed any; they are not changed), so flags
 * keep winning. check (if not NULL) may refuse the result, as a bad
 * value would be: the files a key names that do not load, say. Keys read
 * only at start keep the running values, each change logged as needing a
 * restart; the log settings apply at once. Returns the new configuration
 * (the caller frees it with config_free and free), or NULL after logging
 * why the file, a value or check refused it.
 */
struct config *config_reload(const struct config *running, int argc, char *const *argv,
			     config_check_fn check, void *arg) __attribute__((warn_unused_result));
void config_free(struct config *cfg);
/* Whether the receiver speaks HTTPS (tls_cert_file and tls_key_file set). */
bool config_tls(const struct config *cfg);
/* The host of listen (HOST:PORT, [IPv6]:PORT), without brackets; false if none fits. */
bool config_listen_host(const char *listen, char *host, size_t len);
/* True when public_url is unset and listen is a wildcard address (0.0.0.0,
 * [::], 0, [::0]): the URLs made from it (callback_url, the registry
 * snippet's) would name an address no endpoint or registry can reach. */
bool config_public_url_unreachable(const struct config *cfg);
/*
 * Appends to out the base URL at which registries and endpoints reach
 * reghook, without a trailing slash: public_url, or by default
 * http://<listen> (https:// with TLS).
 */
void config_public_url(const struct config *cfg, struct buf *out);
void config_print_help(FILE *out);
/* Parses "0,5s,5m" into delays; returns the count or -1. */
int config_parse_schedule(const char *s, long long *ms, int max);
/*
 * Parses allow_private_networks' list into nets (at most max): their
 * number, or -1 with the item at fault and why in why.
 */
int config_parse_nets(const char *s, struct netguard_net *nets, int max, char *why, size_t whylen);

#endif
