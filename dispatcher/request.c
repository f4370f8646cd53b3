/*
 * request: see request.h.
 */
#include "request.h"
#include "formats.h"
#include "log.h"
#include "netguard.h"
#include "payload.h"
#include "sign.h"
#include "template.h"
#include "urltemplate.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <yajl/yajl_tree.h>

struct request {
	char delivery_id[40];
	int attempt;
	long long webhook_id;
	char method[8];
	char format[32]; /* the payload format, for history */
	bool allow_private;
	int private_nets_n; /* allow_private_networks, as when the request began */
	struct netguard_net private_nets[CONFIG_MAX_PRIVATE_NETS];
	size_t body_limit;

	CURL *easy;		    /* owned; NULL once finished */
	struct curl_slist *headers; /* owned */
	struct buf url;		    /* expanded target */
	struct buf body;	    /* sent body (empty for GET and DELETE) */
	struct buf sent_headers;    /* JSON array, redacted, for history */

	struct buf resp_body; /* first body_limit bytes */
	bool truncated;
	size_t dropped;		 /* body bytes read past body_limit */
	bool cut;		 /* the transfer ended here once REQUEST_DROP_MAX was dropped */
	bool headers_ended;	 /* the blank line after the last status line's headers came */
	bool own_authorization;	 /* the webhook's own headers hold an Authorization */
	struct buf resp_headers; /* JSON array of the final answer's headers */
	char retry_after[64];

	long long started_ms; /* epoch */
	struct timespec started;
	long duration_ms;
	long status;
	enum request_outcome outcome;
	const char *error_class; /* static string or NULL */
	char error[512];
	char blocked[160];		  /* set by the socket guard */
	char local[192];		  /* a socket this process could not open (open_socket) */
	char curl_error[CURL_ERROR_SIZE]; /* curl's own account of a failure */
};

static const char user_agent[] = "reghook/" REGHOOK_VERSION;

static bool is_sensitive(const char *name)
{
	static const char *const words[] = {"authorization", "signature", "token",  "secret",
					    "cookie",	     "api-key",	  "apikey", "password"};
	char lower[128];
	size_t n = strlen(name);
	if (n >= sizeof(lower))
		n = sizeof(lower) - 1;
	for (size_t i = 0; i < n; i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	lower[n] = '\0';
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strstr(lower, words[i]))
			return true;
	return false;
}

/*
 * Adds a request header to curl and to the history record, its value
 * there redacted if redact is set. A webhook's own headers are always
 * redacted: members who read the history may not read their values.
 */
static void add_header(struct request *r, const char *name, const char *value, bool redact)
{
	struct buf line = BUF_INIT;
	buf_printf(&line, "%s: %s", name, value);
	r->headers = curl_slist_append(r->headers, line.data);
	buf_free(&line);

	/* sent_headers holds the pairs, comma-separated; the record adds the brackets. */
	if (r->sent_headers.len)
		buf_putc(&r->sent_headers, ',');
	buf_putc(&r->sent_headers, '[');
	buf_json_str(&r->sent_headers, name, strlen(name));
	buf_putc(&r->sent_headers, ',');
	if (redact || is_sensitive(name))
		buf_puts(&r->sent_headers, "\"[redacted]\"");
	else
		buf_json_str(&r->sent_headers, value, strlen(value));
	buf_putc(&r->sent_headers, ']');
}

/*
 * What one request may be, whatever its webhook holds (a row written before
 * webhook_set() bounded its fields, or a template of 16 KiB whose variables
 * each expand to a kilobyte of escaped control characters): a URL of 16 KiB
 * once expanded, a body of 1 MiB. Each request in flight holds its body,
 * and its attempt's record holds both again.
 */
#define REQUEST_URL_MAX 16384
#define REQUEST_BODY_MAX (1024 * 1024)
/* Response bytes read and dropped past response_body_limit before the transfer is cut (on_body). */
#define REQUEST_DROP_MAX (1024 * 1024)

static void finish_invalid(struct request *r, const char *why)
{
	r->outcome = REQUEST_INVALID;
	r->error_class = "other";
	snprintf(r->error, sizeof(r->error), "%s", why);
}

/* The SSRF guard: whether the request may go to sa; if not, says why in r->blocked. */
static bool guard_allows(struct request *r, const struct sockaddr *sa)
{
	enum netguard_class c = netguard_classify(sa);
	if (netguard_allowed(c, r->allow_private))
		return true;
	/* Multicast and unspecified addresses are refused whatever the settings. */
	bool listable = netguard_allowed(c, true);
	if (listable && netguard_in_nets(sa, r->private_nets, r->private_nets_n))
		return true;
	snprintf(r->blocked, sizeof(r->blocked), "target address is %s; %s", netguard_class_name(c),
		 !listable	     ? "always refused"
		 : r->private_nets_n ? "refused (" REQUEST_PRIVATE_OFF
				       ", and allow_private_networks does not hold it)"
				     : "refused (" REQUEST_PRIVATE_OFF ")");
	return false;
}

/*
 * CURLOPT_OPENSOCKETFUNCTION: the guard, on the address really connected
 * to. A socket this process cannot open (out of file descriptors, say) is
 * its own failure, not the endpoint's: said so, where libcurl would call
 * it a connection the endpoint refused.
 */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct request *r = arg;
	if (!guard_allows(r, &addr->addr))
		return CURL_SOCKET_BAD;
	curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
	if (fd == CURL_SOCKET_BAD)
		snprintf(r->local, sizeof(r->local),
			 "reghook could not open a socket: %s (the file descriptor limit, "
			 "ulimit -n or LimitNOFILE, against max_in_flight?)",
			 strerror(errno));
	return fd;
}

/*
 * CURLOPT_PREREQFUNCTION: the guard again once connected, new connection or
 * one reused from libcurl's cache, which open_socket does not see: one made
 * while allow_private_targets was on serves no request started after a
 * reload turned it off. A connection made stands for any address refused
 * before it (another of the name's), which then says nothing of this one.
 */
static int check_connected(void *arg, char *primary_ip, char *local_ip, int primary_port,
			   int local_port)
{
	struct request *r = arg;
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, primary_ip, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
	} else if (inet_pton(AF_INET6, primary_ip, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
	} else {
		snprintf(r->blocked, sizeof(r->blocked), "target address '%.64s' not understood",
			 primary_ip);
		return CURL_PREREQFUNC_ABORT;
	}
	if (!guard_allows(r, (const struct sockaddr *)&ss))
		return CURL_PREREQFUNC_ABORT;
	r->blocked[0] = '\0';
	r->local[0] = '\0';
	return CURL_PREREQFUNC_OK;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct request *r = arg;
	size_t len = size * n;
	size_t room = r->body_limit > r->resp_body.len ? r->body_limit - r->resp_body.len : 0;
	if (len > room) {
		r->truncated = true;
		r->dropped += len - room;
	}
	buf_append(&r->resp_body, data, len < room ? len : room);
	/*
	 * The rest is read and dropped, so that the connection can carry the
	 * next request, up to REQUEST_DROP_MAX: an endpoint streaming an endless
	 * body would otherwise keep the transfer (and this process's CPU) busy
	 * until the webhook's timeout, up to a day. Past it the transfer ends
	 * here (the connection with it) and the answer counts as it came.
	 */
	if (r->dropped > REQUEST_DROP_MAX) {
		r->cut = true;
		return 0;
	}
	return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct request *r = arg;
	size_t len = size * n;
	/* A new status line (after 100 Continue, say) starts a new header set. */
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		buf_reset(&r->resp_headers);
		r->retry_after[0] = '\0';
		r->headers_ended = false;
		return len;
	}
	if ((len == 2 && data[0] == '\r' && data[1] == '\n') || (len == 1 && data[0] == '\n')) {
		r->headers_ended = true;
		return len;
	}
	const char *colon = memchr(data, ':', len);
	if (!colon || r->resp_headers.len > 32768)
		return len;
	size_t nl = (size_t)(colon - data);
	const char *v = colon + 1;
	size_t vl = len - nl - 1;
	while (vl && (*v == ' ' || *v == '\t'))
		v++, vl--;
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
		vl--;
	buf_putc(&r->resp_headers, r->resp_headers.len ? ',' : '[');
	buf_putc(&r->resp_headers, '[');
	buf_json_str(&r->resp_headers, data, nl);
	buf_putc(&r->resp_headers, ',');
	buf_json_str(&r->resp_headers, v, vl);
	buf_putc(&r->resp_headers, ']');
	if (nl == 11 && strncasecmp(data, "Retry-After", 11) == 0)
		snprintf(r->retry_after, sizeof(r->retry_after), "%.*s", (int)vl, v);
	return len;
}

/*
 * A webhook's own header may not be one that frames the request or that
 * reghook sets itself: a Content-Length of 0 made curl send the body as the
 * start of the next request on the kept-alive connection, which another
 * namespace's delivery then shared (its history held the first one's body);
 * a Host, a second Content-Type or signature confused the endpoint.
 * webhook_set_headers() refuses the same names (schema/functions/webhooks.sql);
 * rows written before it are skipped here, not sent; the CLI refuses them
 * as bad usage before asking.
 */
bool request_reserved_header(const char *name)
{
	static const char *const exact[] = {
		"content-length",
		"transfer-encoding",
		"host",
		"connection",
		"keep-alive",
		"te",
		"trailer",
		"upgrade",
		"expect",
		"content-type",
		"user-agent",
		"webhook-id",
		"webhook-timestamp",
		"webhook-signature",
		"ce-specversion",
		"ce-id",
		"ce-source",
		"ce-type",
		"ce-subject",
		"ce-time",
		"ce-actor",
	};
	for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
		if (strcasecmp(name, exact[i]) == 0)
			return true;
	return strncasecmp(name, "proxy-", 6) == 0 || strncasecmp(name, "x-reghook-", 10) == 0;
}

static bool add_custom_headers(struct request *r, const char *json)
{
	char err[128];
	yajl_val tree = yajl_tree_parse(json ? json : "[]", err, sizeof(err));
	if (!tree || !YAJL_IS_ARRAY(tree)) {
		if (tree)
			yajl_tree_free(tree);
		return false;
	}
	for (size_t i = 0; i < tree->u.array.len; i++) {
		yajl_val pair = tree->u.array.values[i];
		if (YAJL_IS_ARRAY(pair) && pair->u.array.len == 2 &&
		    YAJL_IS_STRING(pair->u.array.values[0]) &&
		    YAJL_IS_STRING(pair->u.array.values[1]) &&
		    !request_reserved_header(pair->u.array.values[0]->u.string)) {
			add_header(r, pair->u.array.values[0]->u.string,
				   pair->u.array.values[1]->u.string, true);
			if (strcasecmp(pair->u.array.values[0]->u.string, "Authorization") == 0)
				r->own_authorization = true;
		}
	}
	yajl_tree_free(tree);
	return true;
}

/*
 * The body in the webhook's format, and the format's own headers. False
 * with why set when it cannot be made (a template that fails the check
 * here though the database let it in: the delivery fails, not retried).
 */
static bool build_body(struct request *r, const struct request_spec *s, const struct config *cfg,
		       struct payload_headers *extra, char *why, size_t whylen)
{
	if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "DELETE") == 0)
		return true;
	enum formats_format f;
	if (!formats_parse(s->format, &f)) {
		snprintf(why, whylen, "unknown format \"%s\"", s->format);
		return false;
	}
	if (f == FORMATS_REGISTRY && s->raw) {
		buf_puts(&r->body, s->raw);
		return true;
	}
	if (f == FORMATS_TEMPLATE) {
		char err[200];
		if (!s->template_ ||
		    !template_check(s->template_, strlen(s->template_), err, sizeof(err))) {
			snprintf(why, whylen, "template: %s", s->template_ ? err : "none set");
			return false;
		}
	}
	struct buf callback = BUF_INIT, base = BUF_INIT;
	config_public_url(cfg, &base);
	buf_printf(&callback, "%s/callback/%s", base.data, s->callback_token);
	/*
	 * Without registry_url, repo_url is built from the host the registry
	 * was addressed as (payload_dockerhub() checks it). Only then is the
	 * stored event parsed again.
	 */
	yajl_val raw = NULL;
	const char *host = NULL;
	if (!*cfg->registry_url && s->raw) {
		raw = yajl_tree_parse(s->raw, NULL, 0);
		yajl_val h = yajl_tree_get(raw, (const char *[]){"request", "host", NULL},
					   yajl_t_string);
		host = h ? h->u.string : NULL;
	}
	struct payload_event ev = {
		.action = s->action,
		.namespace_ = s->namespace_,
		.name = s->name ? s->name : "",
		.repository = s->repository ? s->repository : s->namespace_,
		.tag = s->tag,
		.digest = s->digest,
		.actor = s->actor,
		.occurred_at = s->occurred_at,
		.description = s->description ? s->description : "",
		.is_private = s->is_private,
		.namespace_created_at = s->namespace_created_at,
		.callback_url = callback.data,
		.registry_url = cfg->registry_url,
		.registry_host = host,
		.event_id = s->event_uuid,
		.delivery_id = s->delivery_id,
		.timestamp = s->event_time,
		.media_type = s->media_type,
		.size = s->size,
		.has_size = s->has_size,
		.source_name = s->source_name,
	};
	bool ok = formats_render(f, &ev, s->raw, s->template_, &r->body, extra);
	if (!ok)
		snprintf(why, whylen, "the event cannot be sent in format %s", formats_name(f));
	if (raw)
		yajl_tree_free(raw);
	buf_free(&callback);
	buf_free(&base);
	return ok;
}

struct request *request_new(const struct request_spec *s, const struct config *cfg)
{
	struct request *r = xcalloc(1, sizeof(*r));
	char err[256];

	snprintf(r->delivery_id, sizeof(r->delivery_id), "%s", s->delivery_id);
	snprintf(r->method, sizeof(r->method), "%s", s->method);
	snprintf(r->format, sizeof(r->format), "%s", s->format);
	r->attempt = s->attempt;
	r->webhook_id = s->webhook_id;
	r->allow_private = cfg->allow_private_targets;
	r->private_nets_n = cfg->private_nets_n;
	memcpy(r->private_nets, cfg->private_nets, sizeof(r->private_nets));
	r->body_limit = (size_t)cfg->response_body_limit;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	r->started_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	clock_gettime(CLOCK_MONOTONIC, &r->started);

	struct urltemplate_vars vars = {s->namespace_, s->name,	  s->repository,
					s->tag,	       s->digest, s->action};
	if (!urltemplate_expand(s->url_template, &vars, &r->url, err, sizeof(err)) ||
	    r->url.len > REQUEST_URL_MAX) {
		if (r->url.len > REQUEST_URL_MAX)
			snprintf(err, sizeof(err),
				 "the URL is %zu bytes once expanded, over the limit "
				 "of %d",
				 r->url.len, REQUEST_URL_MAX);
		/* The history shows the template, as much of it as a URL may be. */
		buf_reset(&r->url);
		buf_append(&r->url, s->url_template, strnlen(s->url_template, REQUEST_URL_MAX));
		finish_invalid(r, err);
		return r;
	}
	struct payload_headers extra = {0};
	bool built = build_body(r, s, cfg, &extra, err, sizeof(err));
	if (built && r->body.len > REQUEST_BODY_MAX) {
		snprintf(err, sizeof(err),
			 "the body is %zu bytes in format %s, over the limit of %d", r->body.len,
			 s->format, REQUEST_BODY_MAX);
		buf_free(&r->body);
		built = false;
	}
	if (!built) {
		payload_headers_free(&extra);
		finish_invalid(r, err);
		return r;
	}
	bool has_body = strcmp(r->method, "GET") != 0 && strcmp(r->method, "DELETE") != 0;
	enum formats_format f;
	const char *fixed = formats_parse(s->format, &f) ? formats_content_type(f) : NULL;
	if (has_body)
		add_header(r, "Content-Type", fixed ? fixed : s->content_type, false);
	add_header(r, "User-Agent", user_agent, false);
	add_header(r, "X-Reghook-Event", s->action, false);
	add_header(r, "X-Reghook-Delivery", s->delivery_id, false);
	for (size_t i = 0; i < extra.n; i++)
		add_header(r, extra.h[i].name, extra.h[i].value, false);
	payload_headers_free(&extra);
	if (!add_custom_headers(r, s->headers_json)) {
		finish_invalid(r, "webhook headers are not readable");
		return r;
	}
	if (s->secret && *s->secret) {
		char sig[128], ts[32];
		long long t = (long long)now.tv_sec;
		if (!sign_standard_webhooks(s->secret, s->delivery_id, t,
					    r->body.data ? r->body.data : "", r->body.len, sig,
					    sizeof(sig))) {
			finish_invalid(r, "the webhook's signing secret is not valid");
			return r;
		}
		snprintf(ts, sizeof(ts), "%lld", t);
		add_header(r, "webhook-id", s->delivery_id, false);
		add_header(r, "webhook-timestamp", ts, false);
		add_header(r, "webhook-signature", sig, false);
	}
	/*
	 * Basic authentication unless the webhook has an Authorization of its
	 * own (rows from before webhook_set refused the two together): libcurl
	 * sends that one alone, and the history says what went out.
	 */
	bool basic = s->username && *s->username && !r->own_authorization;
	if (basic) {
		/* curl writes the header itself; history shows it was sent, not its value. */
		buf_puts(&r->sent_headers, ",[\"Authorization\",\"[redacted]\"]");
	}
	/* No "Expect: 100-continue" round trip. */
	r->headers = curl_slist_append(r->headers, "Expect:");

	CURL *e = curl_easy_init();
	if (!e) {
		finish_invalid(r, "out of memory creating a transfer");
		return r;
	}
	r->easy = e;
	long long timeout = s->timeout_ms > 0 ? s->timeout_ms : cfg->request_timeout_ms;
	if (curl_easy_setopt(e, CURLOPT_URL, r->url.data) != CURLE_OK) {
		finish_invalid(r, "the URL is refused by libcurl");
		return r;
	}
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	/*
	 * The system's CA bundle alone, not its directory too: libcurl shares
	 * one parsed bundle among a multi's transfers only when no CA directory
	 * is set, and Debian's libcurl sets one. Each new TLS connection parsed
	 * the bundle again (about 25 ms of CPU with the loop blocked, and
	 * 256 connections at once left 110 MB the allocator kept). Read again
	 * after an hour, so that update-ca-certificates takes effect.
	 */
	curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(e, CURLOPT_CA_CACHE_TIMEOUT, 3600L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* "Recv failure: Connection reset by peer" says more than its code's text. */
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_error);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, r);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, check_connected);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, r);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
	if (basic) {
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
		curl_easy_setopt(e, CURLOPT_USERNAME, s->username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, s->password ? s->password : "");
	}
	if (strcmp(r->method, "GET") == 0) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(r->method, "DELETE") == 0) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
	} else {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body.data ? r->body.data : "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
		if (strcmp(r->method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	}
	return r;
}

CURL *request_easy(struct request *r)
{
	return r->outcome == REQUEST_INVALID ? NULL : r->easy;
}

static const char *curl_class(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return "dns";
	case CURLE_OPERATION_TIMEDOUT:
		return "timeout";
	case CURLE_COULDNT_CONNECT:
		return "connect";
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_USE_SSL_FAILED:
		return "tls";
	default:
		return "other";
	}
}

void request_finish(struct request *r, CURLcode result)
{
	struct timespec end;
	clock_gettime(CLOCK_MONOTONIC, &end);
	r->duration_ms = (long)((end.tv_sec - r->started.tv_sec) * 1000 +
				(end.tv_nsec - r->started.tv_nsec) / 1000000);
	if (r->outcome == REQUEST_INVALID)
		return;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
	if (result == CURLE_WRITE_ERROR && r->cut)
		result = CURLE_OK; /* on_body ended a body too long to read: answered */
	if (result == CURLE_URL_MALFORMAT) {
		/* No try can mend it (a webhook added before its URL was checked as now): fail at
		 * once. */
		r->status = 0;
		snprintf(r->error, sizeof(r->error), "libcurl cannot send to this URL: %s",
			 r->curl_error[0] ? r->curl_error : curl_easy_strerror(result));
		r->outcome = REQUEST_INVALID;
		r->error_class = "other";
	} else if (result != CURLE_OK) {
		r->outcome = REQUEST_FAILED;
		r->status = 0;
		if (r->blocked[0]) {
			r->error_class = "blocked";
			snprintf(r->error, sizeof(r->error), "%s", r->blocked);
		} else if (r->local[0]) {
			r->error_class = "other";
			snprintf(r->error, sizeof(r->error), "%s", r->local);
		} else if (result == CURLE_OUT_OF_MEMORY && !r->curl_error[0]) {
			/* libcurl's account of a response header line over its limit (100 KB). */
			r->error_class = "other";
			snprintf(r->error, sizeof(r->error),
				 "the response's headers are too large for libcurl (a line over "
				 "100 KB),"
				 " or it ran out of memory");
		} else {
			r->error_class = curl_class(result);
			snprintf(r->error, sizeof(r->error), "%s",
				 r->curl_error[0] ? r->curl_error : curl_easy_strerror(result));
		}
	} else if (!r->headers_ended) {
		/* libcurl takes an answer closed within its headers as whole (RFC 9112 section 8:
		 * incomplete); an endpoint that crashed mid-answer did not take the delivery. */
		r->outcome = REQUEST_FAILED;
		r->error_class = "other";
		snprintf(r->error, sizeof(r->error),
			 "the answer (HTTP %ld) ended before the end of its headers", r->status);
		r->status = 0;
	} else if (r->status >= 200 && r->status < 300) {
		r->outcome = REQUEST_SUCCEEDED;
	} else {
		r->outcome = r->status == 410 ? REQUEST_GONE : REQUEST_FAILED;
		r->error_class = "http";
		snprintf(r->error, sizeof(r->error), "HTTP %ld%s", r->status,
			 r->status >= 300 && r->status < 400 ? " (redirects are not followed)"
							     : "");
	}
}

enum request_outcome request_outcome(const struct request *r)
{
	return r->outcome;
}

const char *request_retry_after(const struct request *r)
{
	return r->retry_after[0] ? r->retry_after : NULL;
}

long request_status(const struct request *r)
{
	return r->status;
}

const char *request_error_class(const struct request *r)
{
	return r->error_class;
}

long request_duration_ms(const struct request *r)
{
	return r->duration_ms;
}

const char *request_delivery_id(const struct request *r)
{
	return r->delivery_id;
}

const char *request_error(const struct request *r)
{
	return r->error[0] ? r->error : "ok";
}

static void json_kv(struct buf *b, const char *key, const char *value, size_t len)
{
	buf_printf(b, ",\"%s\":", key);
	if (value)
		buf_json_str(b, value, len);
	else
		buf_puts(b, "null");
}

void request_record_json(const struct request *r, struct buf *b, const char *outcome,
			 long long delay_ms)
{
	struct buf url = BUF_INIT;
	if (!urltemplate_strip_credentials(r->url.data ? r->url.data : "", &url))
		buf_puts(&url, "(unparseable URL)");
	buf_printf(b,
		   "{\"id\":\"%s\",\"attempt\":%d,\"webhook_id\":%lld,\"attempted_at\":%lld,"
		   "\"duration_ms\":%ld,\"truncated\":%s,\"delay_ms\":%lld",
		   r->delivery_id, r->attempt, r->webhook_id, r->started_ms, r->duration_ms,
		   r->truncated ? "true" : "false", delay_ms);
	json_kv(b, "outcome", outcome, strlen(outcome));
	json_kv(b, "format", r->format, strlen(r->format));
	json_kv(b, "method", r->method, strlen(r->method));
	json_kv(b, "url", url.data, url.len);
	buf_printf(b, ",\"request_headers\":[%s]", buf_cstr((struct buf *)&r->sent_headers));
	json_kv(b, "request_body", r->body.len ? r->body.data : NULL, r->body.len);
	if (r->status)
		buf_printf(b, ",\"response_status\":%ld", r->status);
	buf_printf(b, ",\"response_headers\":%s]",
		   r->resp_headers.len ? r->resp_headers.data : "[");
	/* The body may be anything: hex keeps it exact through JSON into bytea. */
	buf_puts(b, ",\"response_body\":\"");
	static const char hex[] = "0123456789abcdef";
	buf_reserve(b, r->resp_body.len * 2);
	for (size_t i = 0; i < r->resp_body.len; i++) {
		unsigned char c = (unsigned char)r->resp_body.data[i];
		b->data[b->len++] = hex[c >> 4];
		b->data[b->len++] = hex[c & 15];
	}
	b->data[b->len] = '\0';
	buf_putc(b, '"');
	json_kv(b, "error_class", r->error_class, r->error_class ? strlen(r->error_class) : 0);
	json_kv(b, "error_message", r->error[0] ? r->error : NULL, strlen(r->error));
	buf_putc(b, '}');
	buf_free(&url);
}

void request_free(struct request *r)
{
	if (!r)
		return;
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	buf_free(&r->url);
	buf_free(&r->body);
	buf_free(&r->sent_headers);
	buf_free(&r->resp_body);
	buf_free(&r->resp_headers);
	free(r);
}
