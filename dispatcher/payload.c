/*
 * payload: see payload.h.
 *
 * Every yajl_gen call goes through a small wrapper that remembers the
 * first failure and makes the later calls no-ops: after an invalid string
 * yajl's generator is mid-map, and carrying on would only produce a second,
 * more confusing error.
 */
#include "payload.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yajl/yajl_gen.h>

struct gen {
	yajl_gen g; /* owned */
	bool ok;    /* false from the first failed call on */
};

/* A string of len bytes; NULL writes null. */
static void gen_strn(struct gen *j, const char *s, size_t len)
{
	if (!j->ok)
		return;
	yajl_gen_status st =
		s ? yajl_gen_string(j->g, (const unsigned char *)s, len) : yajl_gen_null(j->g);
	j->ok = st == yajl_gen_status_ok;
}

static void gen_str(struct gen *j, const char *s)
{
	gen_strn(j, s, s ? strlen(s) : 0);
}

static void gen_status(struct gen *j, yajl_gen_status st)
{
	if (j->ok)
		j->ok = st == yajl_gen_status_ok;
}

/* "key": "value", with NULL written as "" (the field is always a string). */
static void kv_str(struct gen *j, const char *key, const char *value)
{
	gen_str(j, key);
	gen_str(j, value ? value : "");
}

/* "key": "value" or null. */
static void kv_str_or_null(struct gen *j, const char *key, const char *value)
{
	gen_str(j, key);
	gen_str(j, value);
}

static void kv_int(struct gen *j, const char *key, long long value)
{
	gen_str(j, key);
	if (j->ok)
		gen_status(j, yajl_gen_integer(j->g, value));
}

static void kv_bool(struct gen *j, const char *key, bool value)
{
	gen_str(j, key);
	if (j->ok)
		gen_status(j, yajl_gen_bool(j->g, value));
}

static void open_map(struct gen *j, const char *key)
{
	if (key)
		gen_str(j, key);
	if (j->ok)
		gen_status(j, yajl_gen_map_open(j->g));
}

static void close_map(struct gen *j)
{
	if (j->ok)
		gen_status(j, yajl_gen_map_close(j->g));
}

static void push_data(struct gen *j, const struct payload_event *ev)
{
	open_map(j, "push_data");
	gen_str(j, "images");
	if (j->ok)
		gen_status(j, yajl_gen_array_open(j->g));
	if (ev->digest)
		gen_str(j, ev->digest);
	if (j->ok)
		gen_status(j, yajl_gen_array_close(j->g));
	kv_int(j, "pushed_at", ev->occurred_at);
	kv_str(j, "pusher", ev->actor);
	kv_str_or_null(j, "tag", ev->tag);
	close_map(j);
}

static void delete_data(struct gen *j, const struct payload_event *ev)
{
	open_map(j, "delete_data");
	kv_int(j, "deleted_at", ev->occurred_at);
	kv_str(j, "deleter", ev->actor);
	kv_str_or_null(j, "tag", ev->tag);
	kv_str_or_null(j, "digest", ev->digest);
	close_map(j);
}

/* "name": the repository below its namespace, or its last component when that is empty. */
static void repo_name(struct gen *j, const struct payload_event *ev)
{
	const char *name = ev->name;
	if (!name || !*name) {
		const char *repo = ev->repository ? ev->repository : "";
		const char *slash = strrchr(repo, '/');
		name = slash ? slash + 1 : repo;
	}
	kv_str(j, "name", name);
}

bool payload_host_ok(const char *host)
{
	if (!host || !*host || strlen(host) > PAYLOAD_HOST_MAX)
		return false;
	const char *p = host;
	if (*p == '[') {
		/* An IPv6 literal: hex digits, ':' and '.' (an embedded IPv4). */
		const char *end = strchr(p, ']');
		if (!end || end == p + 1 ||
		    strspn(p + 1, "0123456789abcdefABCDEF:.") != (size_t)(end - p - 1))
			return false;
		p = end + 1;
	} else {
		size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				     "0123456789-.");
		/* Names neither start nor end with '-' or '.'. */
		if (n == 0 || p[0] == '-' || p[0] == '.' || p[n - 1] == '-' || p[n - 1] == '.')
			return false;
		p += n;
	}
	if (*p == '\0')
		return true;
	if (*p != ':')
		return false;
	p++;
	size_t digits = strspn(p, "0123456789");
	return digits >= 1 && digits <= 5 && p[digits] == '\0' && atol(p) >= 1 && atol(p) <= 65535;
}

/*
 * A registry on a loopback host is reached over plain HTTP (Docker treats
 * localhost and 127.0.0.0/8 as insecure registries by default); any other
 * is assumed to be behind TLS, as a registry must be for Docker to push to
 * it without configuration.
 */
static bool host_is_loopback(const char *host)
{
	size_t n = strcspn(host, host[0] == '[' ? "]" : ":");
	if (host[0] == '[')
		return strncmp(host, "[::1]", 5) == 0;
	if ((n == 9 && strncasecmp(host, "localhost", 9) == 0) ||
	    (n > 10 && strncasecmp(host + n - 10, ".localhost", 10) == 0))
		return true;
	return strncmp(host, "127.", 4) == 0 && strspn(host, "0123456789.") == n;
}

/* "repo_url": see payload.h; exactly one slash between base and repository. */
static void repo_url(struct gen *j, const struct payload_event *ev)
{
	const char *repo = ev->repository ? ev->repository : "";
	struct buf url = BUF_INIT;
	if (ev->registry_url && *ev->registry_url) {
		buf_puts(&url, ev->registry_url);
	} else if (payload_host_ok(ev->registry_host)) {
		buf_printf(&url, "%s://%s", host_is_loopback(ev->registry_host) ? "http" : "https",
			   ev->registry_host);
	} else {
		/* Never a relative URL: a consumer would resolve it against itself. */
		kv_str_or_null(j, "repo_url", NULL);
		return;
	}
	while (url.len && url.data[url.len - 1] == '/')
		url.data[--url.len] = '\0';
	while (*repo == '/')
		repo++;
	buf_putc(&url, '/');
	buf_puts(&url, repo);
	gen_str(j, "repo_url");
	gen_strn(j, url.data, url.len);
	buf_free(&url);
}

static void repository(struct gen *j, const struct payload_event *ev)
{
	open_map(j, "repository");
	kv_int(j, "comment_count", 0);
	kv_int(j, "date_created", ev->namespace_created_at);
	kv_str(j, "description", ev->description);
	kv_str(j, "dockerfile", "");
	kv_str(j, "full_description", "");
	kv_bool(j, "is_official", false);
	kv_bool(j, "is_private", ev->is_private);
	kv_bool(j, "is_trusted", false);
	repo_name(j, ev);
	kv_str(j, "namespace", ev->namespace_);
	kv_str(j, "owner", ev->namespace_);
	kv_str(j, "repo_name", ev->repository);
	repo_url(j, ev);
	kv_int(j, "star_count", 0);
	kv_str(j, "status", "Active");
	close_map(j);
}

bool payload_dockerhub(const struct payload_event *ev, struct buf *out)
{
	bool push = ev->action && strcmp(ev->action, "push") == 0;
	if (!push && !(ev->action && strcmp(ev->action, "delete") == 0))
		return false;

	struct gen j = {yajl_gen_alloc(NULL), true};
	if (!j.g)
		return false;
	/* Consumers parse this with strict JSON parsers: never emit bad UTF-8. */
	yajl_gen_config(j.g, yajl_gen_validate_utf8, 1);

	open_map(&j, NULL);
	kv_str(&j, "action", ev->action);
	kv_str(&j, "callback_url", ev->callback_url);
	if (push)
		push_data(&j, ev);
	else
		delete_data(&j, ev);
	repository(&j, ev);
	close_map(&j);

	if (j.ok) {
		const unsigned char *text;
		size_t len;
		j.ok = yajl_gen_get_buf(j.g, &text, &len) == yajl_gen_status_ok;
		if (j.ok)
			buf_append(out, text, len);
	}
	yajl_gen_free(j.g);
	return j.ok;
}
