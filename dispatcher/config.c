/*
 * config: the table of reghook's settings. Each row is a key with its type,
 * default, bounds and help; `reghook --help` prints this table, so the help
 * and the behaviour cannot drift apart. A CONF_RESTART key is read only
 * at start (sockets bound, connections opened, the instance named with it):
 * a reload that changes it says so in the log and keeps the running value.
 * Every other key takes effect on reload for whatever starts after it.
 */
#include "config.h"
#include "conf.h"
#include "buf.h"
#include "log.h"
#include "urltemplate.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *check_log_level(const char *v)
{
	enum log_level l;
	return log_parse_level(v, &l) ? NULL : "not one of debug, info, warn, error";
}

static const char *check_log_format(const char *v)
{
	return strcmp(v, "text") == 0 || strcmp(v, "json") == 0 ? NULL : "not one of text, json";
}

/*
 * The name goes into every lease and attempt record: text the database
 * takes (UTF-8: a Latin-1 byte failed every ingest() and claim while
 * /readyz said ready), whole in the instance's 127 bytes, and printable.
 */
static const char *check_instance_name(const char *v)
{
	size_t len = strlen(v);
	if (len > CONFIG_INSTANCE_NAME_MAX)
		return "longer than 127 bytes";
	char copy[CONFIG_INSTANCE_NAME_MAX + 1];
	memcpy(copy, v, len + 1);
	if (text_printable(copy) != len || strcmp(copy, v) != 0)
		return "not printable UTF-8 text (a control character, or a byte that is not "
		       "UTF-8)";
	return NULL;
}

bool config_listen_host(const char *listen, char *host, size_t len)
{
	const char *colon = strrchr(listen, ':');
	if (!colon)
		return false;
	const char *start = listen, *end = colon;
	if (*start == '[' && end > start && end[-1] == ']') {
		start++;
		end--;
	}
	if ((size_t)(end - start) >= len)
		return false;
	memcpy(host, start, (size_t)(end - start));
	host[end - start] = '\0';
	return true;
}

static const char *check_listen(const char *v)
{
	const char *colon = strrchr(v, ':');
	if (!colon || colon == v)
		return "not HOST:PORT";
	/* Digits only: strtol would take "+80" and " 80", which the URLs made
	 * from listen (public_url's default, the registry snippet) would keep. */
	size_t digits = strspn(colon + 1, "0123456789");
	long port = digits >= 1 && digits <= 5 ? strtol(colon + 1, NULL, 10) : -1;
	if (colon[1 + digits] != '\0' || port < 1 || port > 65535)
		return "port is not a number from 1 to 65535";
	if (v[0] != '[' && memchr(v, ':', (size_t)(colon - v)))
		return "an IPv6 address goes in brackets: [::1]:8080";
	if (v[0] == '[' && colon[-1] != ']')
		return "not [IPv6]:PORT";
	char host[256];
	struct in6_addr a6;
	if (!config_listen_host(v, host, sizeof(host)))
		return "the host is over 255 bytes";
	if (v[0] == '[' && inet_pton(AF_INET6, host, &a6) != 1)
		return "not an IPv6 address in the brackets (no zone: the URLs made of it "
		       "could not hold one)";
	/* An empty host (":8080", "[]:8080") listened on every interface unasked. */
	if (*host == '\0')
		return "no host: give the address to listen on (0.0.0.0 or [::] for every one)";
	for (const char *p = host; v[0] != '[' && *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_'))
			return "the host is not an address or a host name";
	return NULL;
}

static const char *check_nets(const char *v)
{
	static char why[128];
	struct netguard_net nets[CONFIG_MAX_PRIVATE_NETS];
	return config_parse_nets(v, nets, CONFIG_MAX_PRIVATE_NETS, why, sizeof(why)) < 0 ? why
											 : NULL;
}

static const char *check_schedule(const char *v)
{
	long long ms[CONFIG_MAX_RETRY_STEPS];
	return config_parse_schedule(v, ms, CONFIG_MAX_RETRY_STEPS) > 0
		       ? NULL
		       : "not a comma-separated list of up to 32 durations of at most 30d";
}

/* A base that paths are appended to: http(s)://host[:port][/path], and no
 * more ("https://hooks.example.com # prod" made callback URLs of it). */
static const char *check_base_url(const char *v)
{
	if (*v == '\0')
		return NULL;
	size_t scheme = strncmp(v, "http://", 7) == 0 ? 7 : strncmp(v, "https://", 8) == 0 ? 8 : 0;
	if (!scheme)
		return "not an http:// or https:// URL";
	if (strcspn(v + scheme, "/") == 0)
		return "no host after the scheme";
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#')
			return "a base URL holds no whitespace, control character, query or "
			       "fragment";
	/* Every callback_url and the registry's snippet repeat it. */
	if (memchr(v + scheme, '@', strcspn(v + scheme, "/")))
		return "a base URL holds no user name or password";
	static char why[160];
	if (!urltemplate_check_target(v, why, sizeof(why)))
		return why;
	if (strchr(v, '{') || strchr(v, '}'))
		return "a base URL holds no '{' or '}'";
	return NULL;
}

#define F(field) offsetof(struct config, field)
#define DAY (86400000LL)

static const struct conf_key config_keys[] = {
	{"database_url", CONF_STRING, "", F(database_url), 0, 0, NULL,
	 "PostgreSQL connection: libpq conninfo or postgresql:// URI", CONF_RESTART},
	{"listen", CONF_STRING, "127.0.0.1:8080", F(listen), 0, 0, check_listen,
	 "address and port of the HTTP receiver", CONF_RESTART},
	{"public_url", CONF_STRING, "", F(public_url), 0, 0, check_base_url,
	 "base URL at which registries and endpoints reach reghook (callback_url); default "
	 "http://<listen>, https://<listen> with TLS",
	 CONF_RELOADS},
	{"tls_cert_file", CONF_STRING, "", F(tls_cert_file), 0, 0, NULL,
	 "PEM certificate (a chain: the server's first); with tls_key_file the receiver speaks "
	 "HTTPS only; read again on reload",
	 CONF_RELOADS},
	{"tls_key_file", CONF_STRING, "", F(tls_key_file), 0, 0, NULL,
	 "PEM private key of tls_cert_file, without passphrase", CONF_RELOADS},
	{"tls_client_ca_file", CONF_STRING, "", F(tls_client_ca_file), 0, 0, NULL,
	 "PEM CA certificates: clients must present a certificate issued by one of them",
	 CONF_RELOADS},
	{"registry_url", CONF_STRING, "", F(registry_url), 0, 0, check_base_url,
	 "base URL of the registry, for repo_url in payloads; unset: from each event's "
	 "request.host",
	 CONF_RELOADS},
	{"max_in_flight", CONF_INT, "256", F(max_in_flight), 1, 100000, NULL,
	 "deliveries in flight at once, all webhooks", CONF_RELOADS},
	{"max_in_flight_per_webhook", CONF_INT, "256", F(max_in_flight_per_webhook), 1, 100000,
	 NULL,
	 "deliveries in flight at once to one webhook, at most: it starts at 16 and widens while "
	 "the webhook answers fast",
	 CONF_RELOADS},
	{"request_timeout", CONF_DURATION, "10s", F(request_timeout_ms), 1, DAY, NULL,
	 "time allowed for one delivery request", CONF_RELOADS},
	{"connect_timeout", CONF_DURATION, "5s", F(connect_timeout_ms), 1, DAY, NULL,
	 "time allowed to connect to an endpoint", CONF_RELOADS},
	{"max_attempts", CONF_INT, "8", F(max_attempts), 1, 100, NULL,
	 "attempts per delivery before it is failed", CONF_RELOADS},
	{"retry_schedule", CONF_STRING, "0,5s,5m,30m,2h,5h,10h,10h", F(retry_schedule), 0, 0,
	 check_schedule, "delay before each attempt, +-20% jitter; the last repeats", CONF_RELOADS},
	{"allow_private_targets", CONF_BOOL, "false", F(allow_private_targets), 0, 0, NULL,
	 "allow webhooks to loopback, private and link-local addresses", CONF_RELOADS},
	{"allow_private_networks", CONF_STRING, "", F(allow_private_networks), 0, 0, check_nets,
	 "the private networks webhooks may reach while allow_private_targets is off: "
	 "comma-separated addresses and CIDR prefixes (10.20.0.0/16, fd00:1::/64, 192.168.1.7)",
	 CONF_RELOADS},
	{"max_request_body", CONF_SIZE, "1MiB", F(max_request_body), 1024, 1LL << 30, NULL,
	 "largest accepted POST /events body", CONF_RELOADS},
	{"client_timeout", CONF_DURATION, "30s", F(client_timeout_ms), 100, 3600000LL, NULL,
	 "time a client has to send a whole request; also the idle limit of a connection",
	 CONF_RELOADS},
	{"response_body_limit", CONF_SIZE, "64KiB", F(response_body_limit), 0, 16LL << 20, NULL,
	 "bytes of each endpoint response kept in history", CONF_RELOADS},
	{"history_retention", CONF_DURATION, "30d", F(history_retention_ms), 3600000LL, 3650 * DAY,
	 NULL, "delivery history older than this is pruned", CONF_RELOADS},
	{"log_level", CONF_STRING, "info", F(log_level), 0, 0, check_log_level,
	 "debug, info, warn or error", CONF_RELOADS},
	{"log_format", CONF_STRING, "text", F(log_format), 0, 0, check_log_format,
	 "text, or json for one JSON object per line", CONF_RELOADS},
	{"db_timeout", CONF_DURATION, "10s", F(db_timeout_ms), 1000, 3600000LL, NULL,
	 "deadline of every database query and commit; past it the connection is dropped and "
	 "tried again (the schema migrations have none)",
	 CONF_RESTART},
	{"db_connections", CONF_INT, "2", F(db_connections), 1, 64, NULL,
	 "database connections of the receiver (group commit runs on each)", CONF_RESTART},
	{"max_events_per_envelope", CONF_INT, "1000", F(max_events_per_envelope), 1, 1000000, NULL,
	 "most events accepted in one POST /events", CONF_RELOADS},
	{"instance_name", CONF_STRING, "", F(instance_name), 0, 0, check_instance_name,
	 "name of this instance in leases and history; default host:pid", CONF_RESTART},
};

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/*
 * The next item of a comma-separated list at *p, spaces around it dropped,
 * into item: 1, 0 at the list's end, -1 for an empty item (a trailing comma
 * too) or one that does not fit.
 */
static int next_item(const char **p, char *item, size_t size)
{
	if (**p == '\0')
		return 0;
	size_t len = strcspn(*p, ",");
	const char *at = *p;
	while (len > 0 && *at == ' ') {
		at++;
		len--;
	}
	while (len > 0 && at[len - 1] == ' ')
		len--;
	if (len == 0 || len >= size)
		return -1;
	memcpy(item, at, len);
	item[len] = '\0';
	*p += strcspn(*p, ",");
	if (**p == ',' && *++*p == '\0')
		return -1;
	return 1;
}

int config_parse_schedule(const char *s, long long *ms, int max)
{
	int n = 0, r;
	char item[64];
	while ((r = next_item(&s, item, sizeof(item))) > 0) {
		if (n >= max || !conf_parse_duration(item, &ms[n]) ||
		    ms[n] > CONFIG_MAX_RETRY_STEP_MS)
			return -1;
		n++;
	}
	return r < 0 ? -1 : n;
}

int config_parse_nets(const char *s, struct netguard_net *nets, int max, char *why, size_t whylen)
{
	int n = 0, r;
	char item[64];
	while ((r = next_item(&s, item, sizeof(item))) > 0) {
		if (n >= max) {
			snprintf(why, whylen, "more networks than the %d allowed", max);
			return -1;
		}
		const char *bad = netguard_parse_net(item, &nets[n]);
		if (bad) {
			snprintf(why, whylen, "in '%s': %s", item, bad);
			return -1;
		}
		n++;
	}
	if (r < 0)
		snprintf(why, whylen, "an empty item, or one of more than 63 characters");
	return r < 0 ? -1 : n;
}

/* Keys that only make sense together; NULL when they agree, else the reason. */
static const char *check_tls(const struct config *cfg)
{
	bool cert = *cfg->tls_cert_file, key = *cfg->tls_key_file;
	if (cert && !key)
		return "tls_cert_file is set without tls_key_file: set both, or neither";
	if (key && !cert)
		return "tls_key_file is set without tls_cert_file: set both, or neither";
	if (*cfg->tls_client_ca_file && !cert)
		return "tls_client_ca_file needs tls_cert_file and tls_key_file: client "
		       "certificates are asked for in the TLS handshake";
	return NULL;
}

/* Fills cfg from every source; no side effects. On failure cfg is freed and err says why. */
static bool load(struct config *cfg, bool again, int *argc, char **argv, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	if (!(again ? conf_load_again : conf_load)(config_keys, NKEYS, cfg, "REGHOOK_", argc, argv,
						   err, errlen)) {
		config_free(cfg);
		return false;
	}
	const char *why = check_tls(cfg);
	if (why) {
		snprintf(err, errlen, "%s", why);
		config_free(cfg);
		return false;
	}
	cfg->retry_steps =
		config_parse_schedule(cfg->retry_schedule, cfg->retry_ms, CONFIG_MAX_RETRY_STEPS);
	/* Both lists passed their key's check. */
	char unused[128];
	cfg->private_nets_n = config_parse_nets(cfg->allow_private_networks, cfg->private_nets,
						CONFIG_MAX_PRIVATE_NETS, unused, sizeof(unused));
	return true;
}

/* The log settings are process-wide: applied at load and at every reload. */
static void apply_logging(const struct config *cfg)
{
	enum log_level level = LOG_LEVEL_INFO;
	if (!log_parse_level(cfg->log_level, &level))
		level = LOG_LEVEL_INFO;
	log_set_level(level);
	log_set_json(strcmp(cfg->log_format, "json") == 0);
}

/* Whether the sources ask for log_format = json, whatever else is wrong in them. */
static bool wants_json(int argc, char *const *argv)
{
	const struct conf_key *k = conf_find(config_keys, NKEYS, "log_format");
	struct config scratch = {0};
	bool json = conf_peek(k, &scratch, "REGHOOK_", argc, argv) &&
		    strcmp(scratch.log_format, "json") == 0;
	conf_free(k, 1, &scratch);
	return json;
}

void config_error(const char *fmt, ...)
{
	char msg[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_json()) {
		log_error("configuration: %s", msg);
	} else {
		/* It quotes the file's text: no control sequence of it reaches the terminal. */
		text_printable(msg);
		fprintf(stderr, "reghook: configuration: %s\n", msg);
	}
}

bool config_load(struct config *cfg, int *argc, char **argv)
{
	char err[1024];
	/* load() consumes the flags it reads: the log format is looked for in a copy. */
	char **args = xcalloc((size_t)*argc + 1, sizeof(char *));
	memcpy(args, argv, (size_t)*argc * sizeof(char *));
	int nargs = *argc;
	bool ok = load(cfg, false, argc, argv, err, sizeof(err));
	if (!ok) {
		log_set_json(wants_json(nargs, args));
		config_error("%s", err);
	}
	free(args);
	if (!ok)
		return false;
	apply_logging(cfg);
	/* Not refused, as an unknown key in the file is: the environment is
	 * shared with what else runs there, which may use the prefix too. */
	char name[128], hint[128];
	for (size_t at = 0; conf_next_unknown_env(config_keys, NKEYS, "REGHOOK_", &at, name,
						  sizeof(name), hint, sizeof(hint));)
		log_warn("environment variable %s is not a setting of reghook's: ignored%s%s%s",
			 name, *hint ? " (did you mean " : "", hint, *hint ? "?)" : "");
	return true;
}

struct config *config_reload(const struct config *running, int argc, char *const *argv,
			     config_check_fn check, void *arg)
{
	/* conf_load consumes the flags it reads: it gets a copy of the start-up argv. */
	char **args = xcalloc((size_t)argc + 1, sizeof(char *));
	memcpy(args, argv, (size_t)argc * sizeof(char *));
	struct config *fresh = xmalloc(sizeof(*fresh));
	char err[1024];
	bool ok = load(fresh, true, &argc, args, err, sizeof(err));
	free(args);
	if (ok && check && !check(fresh, err, sizeof(err), arg)) {
		config_free(fresh);
		ok = false;
	}
	if (!ok) {
		log_error("configuration reload failed: %s; the running configuration is kept",
			  err);
		free(fresh);
		return NULL;
	}
	struct buf changed = BUF_INIT;
	for (size_t i = 0; i < NKEYS; i++) {
		const struct conf_key *k = &config_keys[i];
		if (conf_same(k, running, fresh))
			continue;
		if (k->apply == CONF_RESTART) {
			log_warn("configuration reload: %s changed, but it is read only at start: "
				 "restart reghook to apply it; the running value is kept",
				 k->name);
			conf_copy(k, fresh, running);
		} else {
			buf_printf(&changed, "%s%s", changed.len ? ", " : "", k->name);
		}
	}
	/* The line in the new format, at the level it ran with: a reload that
	 * raises log_level says so too. */
	log_set_json(strcmp(fresh->log_format, "json") == 0);
	log_info("configuration reloaded: %s", changed.len ? changed.data : "nothing changed");
	apply_logging(fresh);
	buf_free(&changed);
	return fresh;
}

bool config_tls(const struct config *cfg)
{
	return *cfg->tls_cert_file != '\0';
}

bool config_public_url_unreachable(const struct config *cfg)
{
	/* Every spelling of a wildcard address: 0.0.0.0, 0, [::], [::0], ... */
	char host[256];
	if (*cfg->public_url || !config_listen_host(cfg->listen, host, sizeof(host)))
		return false;
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM}, *res;
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return false;
	bool any = false;
	if (res->ai_family == AF_INET)
		any = ((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr == htonl(INADDR_ANY);
	else if (res->ai_family == AF_INET6)
		any = IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr);
	freeaddrinfo(res);
	return any;
}

void config_public_url(const struct config *cfg, struct buf *out)
{
	if (*cfg->public_url)
		buf_puts(out, cfg->public_url);
	else
		buf_printf(out, "%s://%s", config_tls(cfg) ? "https" : "http", cfg->listen);
	while (out->len && out->data[out->len - 1] == '/')
		out->data[--out->len] = '\0';
}

void config_free(struct config *cfg)
{
	conf_free(config_keys, NKEYS, cfg);
}

void config_print_help(FILE *out)
{
	fprintf(out, "Configuration (--config FILE with 'key = value' lines, REGHOOK_<KEY> "
		     "environment variables or REGHOOK_<KEY>_FILE naming a file that holds "
		     "the value, or --key value; later wins):\n");
	conf_print_help(config_keys, NKEYS, out);
}
