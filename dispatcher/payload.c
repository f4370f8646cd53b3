/*
 * payload: see payload.h.
 */
#include "payload.h"
#include "envelope.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void push_data(struct jsongen *j, const struct payload_event *ev)
{
	jsongen_map_open(j, "push_data");
	jsongen_array_open(j, "images");
	if (ev->digest)
		jsongen_str(j, ev->digest);
	jsongen_array_close(j);
	jsongen_kv_int(j, "pushed_at", ev->occurred_at);
	jsongen_kv_str_or_empty(j, "pusher", ev->actor);
	jsongen_kv_str(j, "tag", ev->tag);
	jsongen_map_close(j);
}

static void delete_data(struct jsongen *j, const struct payload_event *ev)
{
	jsongen_map_open(j, "delete_data");
	jsongen_kv_int(j, "deleted_at", ev->occurred_at);
	jsongen_kv_str_or_empty(j, "deleter", ev->actor);
	jsongen_kv_str(j, "tag", ev->tag);
	jsongen_kv_str(j, "digest", ev->digest);
	jsongen_map_close(j);
}

/* "name": the repository below its namespace, or its last component when that is empty. */
static void repo_name(struct jsongen *j, const struct payload_event *ev)
{
	const char *name = ev->name;
	if (!name || !*name) {
		const char *repo = ev->repository ? ev->repository : "";
		const char *slash = strrchr(repo, '/');
		name = slash ? slash + 1 : repo;
	}
	jsongen_kv_str_or_empty(j, "name", name);
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

bool payload_registry_base(const struct payload_event *ev, struct buf *out)
{
	size_t was = out->len;
	if (ev->registry_url && *ev->registry_url)
		buf_puts(out, ev->registry_url);
	else if (payload_host_ok(ev->registry_host))
		buf_printf(out, "%s://%s", host_is_loopback(ev->registry_host) ? "http" : "https",
			   ev->registry_host);
	else
		return false;
	while (out->len > was && out->data[out->len - 1] == '/')
		out->data[--out->len] = '\0';
	return true;
}

/*
 * Exactly one slash between base and repository, whose bytes other than
 * letters, digits, "-._~" and "/" are percent-encoded: a registry's names
 * never hold others, but a token may post any, and a space or '|' in a
 * link broke it (Slack's) or made it no URL at all.
 */
bool payload_repo_url(const struct payload_event *ev, struct buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	if (!payload_registry_base(ev, out))
		return false;
	const char *repo = ev->repository ? ev->repository : "";
	while (*repo == '/')
		repo++;
	buf_putc(out, '/');
	for (const unsigned char *p = (const unsigned char *)repo; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~/", *p)) {
			buf_putc(out, (char)*p);
		} else {
			char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			buf_append(out, esc, 3);
		}
	}
	return true;
}

/* "repo_url", or null: never a relative URL, which a consumer would resolve against itself. */
static void repo_url(struct jsongen *j, const struct payload_event *ev)
{
	struct buf url = BUF_INIT;
	bool known = payload_repo_url(ev, &url);
	jsongen_str(j, "repo_url");
	jsongen_strn(j, known ? url.data : NULL, url.len);
	buf_free(&url);
}

static void repository(struct jsongen *j, const struct payload_event *ev)
{
	jsongen_map_open(j, "repository");
	jsongen_kv_int(j, "comment_count", 0);
	jsongen_kv_int(j, "date_created", ev->namespace_created_at);
	jsongen_kv_str_or_empty(j, "description", ev->description);
	jsongen_kv_str_or_empty(j, "dockerfile", "");
	jsongen_kv_str_or_empty(j, "full_description", "");
	jsongen_kv_bool(j, "is_official", false);
	jsongen_kv_bool(j, "is_private", ev->is_private);
	jsongen_kv_bool(j, "is_trusted", false);
	repo_name(j, ev);
	jsongen_kv_str_or_empty(j, "namespace", ev->namespace_);
	jsongen_kv_str_or_empty(j, "owner", ev->namespace_);
	jsongen_kv_str_or_empty(j, "repo_name", ev->repository);
	repo_url(j, ev);
	jsongen_kv_int(j, "star_count", 0);
	jsongen_kv_str_or_empty(j, "status", "Active");
	jsongen_map_close(j);
}

bool payload_is_push(const struct payload_event *ev)
{
	return ev->action && strcmp(ev->action, "push") == 0;
}

bool payload_action_ok(const struct payload_event *ev)
{
	return payload_is_push(ev) || (ev->action && strcmp(ev->action, "delete") == 0);
}

bool payload_dockerhub(const struct payload_event *ev, struct buf *out)
{
	if (!payload_action_ok(ev))
		return false;
	struct jsongen j;
	if (!jsongen_init(&j))
		return false;
	jsongen_map_open(&j, NULL);
	jsongen_kv_str_or_empty(&j, "action", ev->action);
	jsongen_kv_str_or_empty(&j, "callback_url", ev->callback_url);
	if (payload_is_push(ev))
		push_data(&j, ev);
	else
		delete_data(&j, ev);
	repository(&j, ev);
	jsongen_map_close(&j);
	return jsongen_finish(&j, out);
}

bool payload_registry_event(const struct payload_event *ev, struct buf *out)
{
	if (!payload_action_ok(ev))
		return false;
	char when[PAYLOAD_TIME_MAX];
	payload_time(ev, when);
	struct jsongen j;
	if (!jsongen_init(&j))
		return false;
	jsongen_map_open(&j, NULL);
	jsongen_kv_str_or_empty(&j, "id", ev->event_id ? ev->event_id : ev->delivery_id);
	jsongen_kv_str(&j, "timestamp", when);
	jsongen_kv_str(&j, "action", ev->action);
	jsongen_map_open(&j, "target");
	if (ev->media_type)
		jsongen_kv_str(&j, "mediaType", ev->media_type);
	if (ev->digest)
		jsongen_kv_str(&j, "digest", ev->digest);
	jsongen_kv_str_or_empty(&j, "repository", ev->repository);
	if (ev->tag)
		jsongen_kv_str(&j, "tag", ev->tag);
	jsongen_map_close(&j);
	jsongen_map_open(&j, "actor");
	if (ev->actor && *ev->actor)
		jsongen_kv_str(&j, "name", ev->actor);
	jsongen_map_close(&j);
	jsongen_map_close(&j);
	return jsongen_finish(&j, out);
}

void payload_time(const struct payload_event *ev, char out[PAYLOAD_TIME_MAX])
{
	if (ev->timestamp && envelope_timestamp(ev->timestamp, out, PAYLOAD_TIME_MAX))
		return;
	time_t t = (time_t)ev->occurred_at;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || strftime(out, PAYLOAD_TIME_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, PAYLOAD_TIME_MAX, "1970-01-01T00:00:00Z");
}

void payload_subject(const struct payload_event *ev, struct buf *out)
{
	buf_puts(out, ev->repository ? ev->repository : "");
	if (ev->tag)
		buf_printf(out, ":%s", ev->tag);
	else if (ev->digest)
		buf_printf(out, "@%s", ev->digest);
}

void payload_event_object(struct jsongen *j, const struct payload_event *ev)
{
	char when[PAYLOAD_TIME_MAX];
	payload_time(ev, when);
	struct buf base = BUF_INIT;
	bool has_base = payload_registry_base(ev, &base);

	jsongen_map_open(j, NULL);
	jsongen_kv_str(j, "action", ev->action);
	jsongen_kv_str(j, "namespace", ev->namespace_);
	jsongen_kv_str(j, "repository", ev->repository);
	jsongen_kv_str(j, "name", ev->name);
	jsongen_kv_str(j, "tag", ev->tag);
	jsongen_kv_str(j, "digest", ev->digest);
	jsongen_kv_str(j, "media_type", ev->media_type);
	jsongen_str(j, "size");
	if (ev->has_size)
		jsongen_int(j, ev->size);
	else
		jsongen_null(j);
	jsongen_kv_str(j, "actor", ev->actor && *ev->actor ? ev->actor : NULL);
	jsongen_kv_str(j, "timestamp", when);
	jsongen_str(j, "registry_url");
	jsongen_strn(j, has_base ? base.data : NULL, base.len);
	jsongen_kv_str(j, "event_id", ev->event_id);
	jsongen_map_close(j);
	buf_free(&base);
}

void payload_headers_add(struct payload_headers *hs, const char *name, char *value)
{
	if (hs->n == PAYLOAD_MAX_HEADERS)
		fatal("payload: more than %d format headers", PAYLOAD_MAX_HEADERS);
	hs->h[hs->n++] = (struct payload_header){name, value};
}

void payload_headers_free(struct payload_headers *hs)
{
	for (size_t i = 0; i < hs->n; i++)
		free(hs->h[i].value);
	hs->n = 0;
}

const char *payload_headers_get(const struct payload_headers *hs, const char *name)
{
	for (size_t i = 0; i < hs->n; i++)
		if (strcasecmp(hs->h[i].name, name) == 0)
			return hs->h[i].value;
	return NULL;
}
