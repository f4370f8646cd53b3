/*
 * envelope: see envelope.h.
 */
#include "envelope.h"
#include "jsonparse.h"
#include "log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#define MAX_FIELD 1024
/* distribution's limit on a repository name (reference.NameTotalLengthMax) */
#define MAX_REPOSITORY 255

static const char *const manifest_types[] = {
	"application/vnd.docker.distribution.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
};

enum event_kind envelope_classify(const char *action, const char *media_type, const char *url,
				  const char *tag)
{
	if (!action)
		return EVENT_IGNORED;
	if (strcmp(action, "delete") == 0)
		return EVENT_DELETE;
	if (strcmp(action, "push") != 0)
		return EVENT_IGNORED; /* pull, mount, anything newer */
	if (tag && *tag)
		return EVENT_IMAGE_PUSH;
	for (size_t i = 0; i < sizeof(manifest_types) / sizeof(manifest_types[0]); i++)
		if (media_type && strcmp(media_type, manifest_types[i]) == 0)
			return EVENT_MANIFEST_PUSH;
	/* A manifest type this list does not know yet still has a manifest URL. */
	if (url && strstr(url, "/manifests/"))
		return EVENT_MANIFEST_PUSH;
	return EVENT_IGNORED; /* a blob */
}

static bool digits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

static int num(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

bool envelope_timestamp(const char *in, char *out, size_t outlen)
{
	/* YYYY-MM-DDTHH:MM:SS */
	if (strlen(in) < 20 || !digits(in, 4) || in[4] != '-' || !digits(in + 5, 2) ||
	    in[7] != '-' || !digits(in + 8, 2) ||
	    (in[10] != 'T' && in[10] != 't' && in[10] != ' ') || !digits(in + 11, 2) ||
	    in[13] != ':' || !digits(in + 14, 2) || in[16] != ':' || !digits(in + 17, 2))
		return false;
	int mon = num(in + 5, 2), day = num(in + 8, 2), hour = num(in + 11, 2),
	    min = num(in + 14, 2), sec = num(in + 17, 2);
	/*
	 * Second 60 (RFC 3339's leap second) is refused: a registry (Go) never
	 * writes it, PostgreSQL reads it as the next minute, and the time was
	 * sent on as it came, which consumers (JavaScript, Python, Go) refuse or
	 * replace with their own clock.
	 */
	if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 59)
		return false;
	const char *p = in + 19;
	char frac[8] = "";
	if (*p == '.') {
		int n = 0;
		p++;
		while (isdigit((unsigned char)p[n]))
			n++;
		if (n < 1 || n > 9)
			return false;
		/* PostgreSQL keeps microseconds: the rest is dropped, not rounded up a second. */
		snprintf(frac, sizeof(frac), ".%.*s", n > 6 ? 6 : n, p);
		p += n;
	}
	char zone[8];
	if (*p == 'Z' || *p == 'z') {
		snprintf(zone, sizeof(zone), "Z");
		p++;
	} else if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' &&
		   digits(p + 4, 2) && num(p + 1, 2) <= 23 && num(p + 4, 2) <= 59) {
		snprintf(zone, sizeof(zone), "%.6s", p);
		p += 6;
	} else {
		return false;
	}
	if (*p != '\0')
		return false;
	int n = snprintf(out, outlen, "%.10sT%.8s%s%s", in, in + 11, frac, zone);
	return n > 0 && (size_t)n < outlen;
}

/*
 * Looks up a string field at path; absent and JSON null give NULL (ok),
 * any other non-string is an error. Empty strings become NULL. Any length:
 * parse_event() bounds those of the events it keeps.
 */
static bool get_string(yajl_val obj, const char *const *path, size_t idx, const char **out,
		       char *err, size_t errlen)
{
	*out = NULL;
	yajl_val v = yajl_tree_get(obj, (const char **)path, yajl_t_any);
	if (!v || YAJL_IS_NULL(v))
		return true;
	if (!YAJL_IS_STRING(v)) {
		snprintf(err, errlen, "events[%zu].%s%s%s: not a string", idx, path[0],
			 path[1] ? "." : "", path[1] ? path[1] : "");
		return false;
	}
	const char *s = YAJL_GET_STRING(v);
	*out = *s ? s : NULL;
	return true;
}

/*
 * Cuts s (a string of the tree) to at most max bytes, at the start of a
 * UTF-8 sequence, so that what is left is whole characters.
 */
static void cut_utf8(char *s, size_t max)
{
	if (!s || strlen(s) <= max)
		return;
	size_t n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	s[n] = '\0';
}

/*
 * A repository name as a registry gives it: at most MAX_REPOSITORY bytes,
 * path components separated by single slashes, none empty. The receiver
 * sends the database every whole-component prefix of it
 * (envelope_event_json), so an unbounded name would cost the square of
 * its length: 1,024 slashes, 525 kB an event.
 */
static bool repository_ok(const char *repo, size_t idx, char *err, size_t errlen)
{
	size_t len = strlen(repo);
	if (len > MAX_REPOSITORY) {
		snprintf(err, errlen, "events[%zu].target.repository: longer than %d bytes", idx,
			 MAX_REPOSITORY);
		return false;
	}
	if (repo[0] == '/' || repo[len - 1] == '/' || strstr(repo, "//")) {
		snprintf(err, errlen,
			 "events[%zu].target.repository: an empty path component in '%s'", idx,
			 repo);
		return false;
	}
	if (strchr(repo, '\\')) {
		snprintf(err, errlen, "events[%zu].target.repository: a '\\' in '%s'", idx, repo);
		return false;
	}
	/* "." and "..": no registry makes them, and in a URL they are dot-segments. */
	for (const char *c = repo; c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL) {
		size_t n = strcspn(c, "/");
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) {
			snprintf(err, errlen,
				 "events[%zu].target.repository: a path component '.' or '..' in "
				 "'%s'",
				 idx, repo);
			return false;
		}
	}
	return true;
}

/*
 * A tag or a digest goes into URLs ({tag}, {digest}): neither may be a path
 * of its own. A registry's tags are [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} and
 * its digests algorithm:hex; a token may post any, and a value of "..",
 * "../run" or "x/../../run", percent-encoded, was still a dot-segment for
 * an endpoint behind nginx, which decodes the path before resolving it
 * (/deploy/{tag}/run reached /run).
 */
static bool not_a_path(const char *value, const char *field, size_t idx, char *err, size_t errlen)
{
	if (value &&
	    (strpbrk(value, "/\\") || strcmp(value, ".") == 0 || strcmp(value, "..") == 0)) {
		snprintf(err, errlen,
			 "events[%zu].target.%s: '%.64s' holds '/' or '\\' or is '.' or '..' (no "
			 "registry makes such a %s)",
			 idx, field, value, field);
		return false;
	}
	return true;
}

#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

/*
 * Every byte of value is one of allowed: else says which is not, by its
 * place (the value may hold what a log or a message should not show:
 * control characters, Unicode's direction and zero-width characters, which
 * chat formats would show as they are).
 */
static bool only(const char *value, const char *allowed, const char *field, const char *what,
		 size_t idx, char *err, size_t errlen)
{
	size_t at = value ? strspn(value, allowed) : 0;
	if (!value || value[at] == '\0')
		return true;
	snprintf(err, errlen, "events[%zu].target.%s: byte 0x%02x at %zu is not in a registry's %s",
		 idx, field, (unsigned char)value[at], at, what);
	return false;
}

/*
 * What a registry's names are made of. Tags: [A-Za-z0-9_][A-Za-z0-9_.-]
 * {0,127} (distribution's reference.TagRegexp); an empty one is none.
 * Repositories: path components of lower-case letters, digits and
 * separators, the first one perhaps a host (upper case, a port, an IPv6
 * address in brackets). Digests: algorithm:hex. A token may post anything;
 * reghook keeps only what a registry makes.
 */
static bool names_ok(const struct reg_event *ev, size_t idx, char *err, size_t errlen)
{
	if (ev->tag && *ev->tag &&
	    (strlen(ev->tag) > 128 || ev->tag[0] == '.' || ev->tag[0] == '-')) {
		snprintf(err, errlen,
			 "events[%zu].target.tag: not a registry's tag ([A-Za-z0-9_][A-Za-z0-9_.-]"
			 "{0,127})",
			 idx);
		return false;
	}
	return only(ev->tag, ALNUM "_.-", "tag", "tags ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})", idx,
		    err, errlen) &&
	       only(ev->repository, ALNUM "_.-/:[]", "repository", "repository names", idx, err,
		    errlen) &&
	       only(ev->digest, ALNUM "_.+=:-", "digest", "digests (algorithm:hex)", idx, err,
		    errlen);
}

static void gen_value(yajl_gen g, yajl_val v)
{
	switch (v->type) {
	case yajl_t_string:
		yajl_gen_string(g, (const unsigned char *)v->u.string, strlen(v->u.string));
		break;
	case yajl_t_number:
		yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
		break;
	case yajl_t_object:
		yajl_gen_map_open(g);
		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];
			yajl_gen_string(g, (const unsigned char *)k, strlen(k));
			gen_value(g, v->u.object.values[i]);
		}
		yajl_gen_map_close(g);
		break;
	case yajl_t_array:
		yajl_gen_array_open(g);
		for (size_t i = 0; i < v->u.array.len; i++)
			gen_value(g, v->u.array.values[i]);
		yajl_gen_array_close(g);
		break;
	case yajl_t_true:
		yajl_gen_bool(g, 1);
		break;
	case yajl_t_false:
		yajl_gen_bool(g, 0);
		break;
	default:
		yajl_gen_null(g);
	}
}

static char *serialise(yajl_val v)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *out;
	size_t len;
	gen_value(g, v);
	yajl_gen_get_buf(g, &out, &len);
	char *s = xstrndup((const char *)out, len);
	yajl_gen_free(g);
	return s;
}

static bool parse_event(yajl_val e, size_t idx, struct reg_event *ev, char *err, size_t errlen)
{
	static const char *const p_id[] = {"id", NULL}, *const p_action[] = {"action", NULL},
				 *const p_ts[] = {"timestamp", NULL},
				 *const p_repo[] = {"target", "repository", NULL},
				 *const p_tag[] = {"target", "tag", NULL},
				 *const p_digest[] = {"target", "digest", NULL},
				 *const p_type[] = {"target", "mediaType", NULL},
				 *const p_url[] = {"target", "url", NULL},
				 *const p_req[] = {"request", "id", NULL},
				 *const p_actor[] = {"actor", "name", NULL};
	const char *ts, *url;

	if (!YAJL_IS_OBJECT(e)) {
		snprintf(err, errlen, "events[%zu]: not an object", idx);
		return false;
	}
	if (!get_string(e, p_action, idx, &ev->action, err, errlen))
		return false;
	if (!ev->action) {
		snprintf(err, errlen, "events[%zu].action: missing", idx);
		return false;
	}
	yajl_val target = yajl_tree_get(e, (const char *[]){"target", NULL}, yajl_t_any);
	if (target && !YAJL_IS_OBJECT(target) && !YAJL_IS_NULL(target)) {
		snprintf(err, errlen, "events[%zu].target: not an object", idx);
		return false;
	}
	/*
	 * Every field's type first, but no length: an event the registry
	 * really sends and reghook ignores (a pull, a blob) is answered 200
	 * whatever it holds. target.url is read for the event's kind only,
	 * and is built from the Host header of the client's request: a long
	 * one (its push or pull succeeded) was answered 400, which the
	 * registry sends again and again, every later event of its queue
	 * behind it.
	 */
	if (!get_string(e, p_id, idx, &ev->id, err, errlen) ||
	    !get_string(e, p_ts, idx, &ts, err, errlen) ||
	    !get_string(e, p_repo, idx, &ev->repository, err, errlen) ||
	    !get_string(e, p_tag, idx, &ev->tag, err, errlen) ||
	    !get_string(e, p_digest, idx, &ev->digest, err, errlen) ||
	    !get_string(e, p_type, idx, &ev->media_type, err, errlen) ||
	    !get_string(e, p_url, idx, &url, err, errlen) ||
	    !get_string(e, p_req, idx, &ev->request_id, err, errlen) ||
	    !get_string(e, p_actor, idx, &ev->actor, err, errlen))
		return false;

	ev->kind = envelope_classify(ev->action, ev->media_type, url, ev->tag);
	if (ev->kind == EVENT_IGNORED)
		return true;
	/* A kept event's fields are stored and sent: each at most MAX_FIELD bytes. */
	const struct {
		const char *const *path;
		const char *value;
	} kept[] = {{p_id, ev->id},	      {p_ts, ts},
		    {p_repo, ev->repository}, {p_tag, ev->tag},
		    {p_digest, ev->digest},   {p_type, ev->media_type},
		    {p_req, ev->request_id}};
	for (size_t k = 0; k < sizeof(kept) / sizeof(kept[0]); k++) {
		if (kept[k].value && strlen(kept[k].value) > MAX_FIELD) {
			const char *const *path = kept[k].path;
			snprintf(err, errlen, "events[%zu].%s%s%s: longer than %d bytes", idx,
				 path[0], path[1] ? "." : "", path[1] ? path[1] : "", MAX_FIELD);
			return false;
		}
	}

	/* What a kept event must carry. */
	const char *missing = !ev->id		? "id"
			      : !ts		? "timestamp"
			      : !ev->repository ? "target.repository"
						: NULL;
	if (!missing && ev->kind != EVENT_DELETE && !ev->digest)
		missing = "target.digest";
	if (!missing && ev->kind == EVENT_DELETE && !ev->digest && !ev->tag)
		missing = "target.digest or target.tag";
	if (missing) {
		snprintf(err, errlen, "events[%zu].%s: missing", idx, missing);
		return false;
	}
	if (!repository_ok(ev->repository, idx, err, errlen) ||
	    !not_a_path(ev->tag, "tag", idx, err, errlen) ||
	    !not_a_path(ev->digest, "digest", idx, err, errlen) || !names_ok(ev, idx, err, errlen))
		return false;
	if (!envelope_timestamp(ts, ev->timestamp, sizeof(ev->timestamp))) {
		snprintf(err, errlen,
			 "events[%zu].timestamp: not an RFC 3339 time (seconds 00 to 59): '%.64s'",
			 idx, ts);
		return false;
	}
	ev->raw = serialise(e);
	/*
	 * The pusher's name (a token service's subject may be long) is the
	 * registry's to choose, and refusing it stalls the registry's queue:
	 * kept whole in the raw event, cut to MAX_FIELD bytes where it is
	 * shown (payloads, headers, chat).
	 */
	cut_utf8((char *)ev->actor, MAX_FIELD);
	return true;
}

/* Copies the event's strings out of the tree, into one block it owns. */
static void own_fields(struct reg_event *ev)
{
	const char **const field[] = {&ev->id,	   &ev->action,	    &ev->repository, &ev->tag,
				      &ev->digest, &ev->media_type, &ev->request_id, &ev->actor};
	const size_t n = sizeof(field) / sizeof(field[0]);
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += *field[i] ? strlen(*field[i]) + 1 : 0;
	ev->fields = xmalloc(total ? total : 1);
	char *p = ev->fields;
	for (size_t i = 0; i < n; i++) {
		if (!*field[i])
			continue;
		size_t len = strlen(*field[i]) + 1;
		memcpy(p, *field[i], len);
		*field[i] = p;
		p += len;
	}
	ev->bytes = total + (ev->raw ? strlen(ev->raw) + 1 : 0);
	/* and the repository's prefixes in the batch (envelope_event_json) */
	for (const char *c = ev->repository; c && *c; c++)
		if (*c == '/' || !c[1])
			ev->bytes += (size_t)(c - ev->repository) + 4;
}

enum envelope_status envelope_parse(const char *body, size_t len, size_t max_events,
				    struct envelope *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));

	if (len == 0) {
		snprintf(err, errlen, "empty body: expected a JSON envelope {\"events\": [...]}");
		return ENVELOPE_BAD;
	}
	/*
	 * One strict pass decides and builds: a huge envelope gets its 413
	 * before its events are all in the tree.
	 */
	const struct jsonparse_limits limits = {ENVELOPE_MAX_DEPTH, max_events};
	yajl_val tree;
	char jerr[256];
	switch (jsonparse(body, len, &limits, &tree, jerr, sizeof(jerr))) {
	case JSONPARSE_OK:
		break;
	case JSONPARSE_TOO_MANY:
		snprintf(err, errlen,
			 "more than %zu events in one envelope; at most %zu are accepted",
			 max_events, max_events);
		return ENVELOPE_TOO_MANY;
	case JSONPARSE_BAD:
		snprintf(err, errlen, "body is %s", jerr);
		return ENVELOPE_BAD;
	}
	out->tree = tree;
	yajl_val events = yajl_tree_get(tree, (const char *[]){"events", NULL}, yajl_t_any);
	if (!YAJL_IS_OBJECT(tree) || !events) {
		snprintf(err, errlen,
			 "not an envelope: expected an object with an \"events\" array");
		goto bad;
	}
	if (!YAJL_IS_ARRAY(events)) {
		snprintf(err, errlen, "events: not an array");
		goto bad;
	}
	out->count = events->u.array.len;
	out->events = xcalloc(out->count ? out->count : 1, sizeof(struct reg_event));
	for (size_t i = 0; i < out->count; i++)
		if (!parse_event(events->u.array.values[i], i, &out->events[i], err, errlen))
			goto bad;
	for (size_t i = 0; i < out->count; i++)
		own_fields(&out->events[i]);
	yajl_tree_free(out->tree);
	out->tree = NULL;
	return ENVELOPE_OK;
bad:
	envelope_free(out);
	return ENVELOPE_BAD;
}

void envelope_free(struct envelope *env)
{
	for (size_t i = 0; i < env->count && env->events; i++) {
		free(env->events[i].raw);
		free(env->events[i].fields);
	}
	free(env->events);
	if (env->tree)
		yajl_tree_free(env->tree);
	memset(env, 0, sizeof(*env));
}

static void json_field(struct buf *b, const char *key, const char *value)
{
	buf_printf(b, ",\"%s\":", key);
	if (value)
		buf_json_str(b, value, strlen(value));
	else
		buf_puts(b, "null");
}

void envelope_event_json(struct buf *b, const struct reg_event *ev, int index, long long source_id)
{
	buf_printf(b, "{\"i\":%d,\"s\":%lld", index, source_id);
	json_field(b, "id", ev->id);
	json_field(b, "action", ev->kind == EVENT_DELETE ? "delete" : "push");
	json_field(b, "repository", ev->repository);
	/* Its whole-component prefixes, longest first, for the namespace lookup. */
	buf_puts(b, ",\"p\":[");
	const char *repo = ev->repository ? ev->repository : "";
	size_t len = strlen(repo);
	bool first = true;
	for (size_t end = len; end > 0; end--) {
		if (end == len || repo[end] == '/') {
			if (!first)
				buf_putc(b, ',');
			buf_json_str(b, repo, end);
			first = false;
		}
	}
	buf_putc(b, ']');
	json_field(b, "tag", ev->tag);
	json_field(b, "digest", ev->digest);
	json_field(b, "media_type", ev->media_type);
	json_field(b, "request_id", ev->request_id);
	json_field(b, "actor", ev->actor);
	json_field(b, "ts", ev->timestamp);
	buf_puts(b, ",\"raw\":");
	buf_puts(b, ev->raw);
	buf_putc(b, '}');
}
