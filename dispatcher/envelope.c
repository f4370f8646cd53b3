/*
 * envelope: see envelope.h.
 */
#include "envelope.h"
#include "log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#define MAX_FIELD 1024

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
	if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
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

/* Length of the UTF-8 sequence at s (at most n bytes), or 0 if it is not
 * well-formed (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF). */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* The value of the 4 hex digits at s, or -1. */
static int hex4(const char *s, size_t n)
{
	int v = 0;
	if (n < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/*
 * Checks what yajl lets through but would change or PostgreSQL would
 * refuse, before the tree is built: nesting deeper than ENVELOPE_MAX_DEPTH
 * (yajl recurses), bytes that are not well-formed UTF-8, and the escapes
 * \u0000 (cut C strings short) and unpaired surrogates (yajl turns them
 * into '?'). Structure outside strings is yajl's to judge.
 *
 * It also counts the elements of arrays directly inside the top-level
 * object (in an envelope, only "events"; the longest is taken), so that a
 * huge envelope gets its 413 before yajl builds a tree of it: yajl grows
 * an array one realloc at a time, which some allocators (ASan's,
 * valgrind's) turn quadratic.
 */
static enum envelope_status prescan(const char *body, size_t len, size_t max_events, char *err,
				    size_t errlen)
{
	const unsigned char *s = (const unsigned char *)body;
	int depth = 0;
	bool in_string = false, counting = false;
	size_t elements = 0, most = 0;
	for (size_t i = 0; i < len;) {
		unsigned char c = s[i];
		if (c >= 0x80) {
			size_t n = utf8_sequence(s + i, len - i);
			if (n == 0) {
				snprintf(err, errlen, "body is not JSON: invalid UTF-8 at byte %zu",
					 i);
				return ENVELOPE_BAD;
			}
			i += n;
			continue;
		}
		if (!in_string) {
			if (c == '"') {
				in_string = true;
			} else if (c == '{' || c == '[') {
				if (++depth > ENVELOPE_MAX_DEPTH) {
					snprintf(err, errlen, "JSON nested deeper than %d levels",
						 ENVELOPE_MAX_DEPTH);
					return ENVELOPE_BAD;
				}
				if (depth == 2) {
					counting = c == '[';
					elements = 1;
					if (counting && most == 0)
						most = 1;
				}
			} else if (c == '}' || c == ']') {
				depth--;
			} else if (c == ',' && depth == 2 && counting && ++elements > most) {
				most = elements;
			}
			i++;
			continue;
		}
		if (c == '"') {
			in_string = false;
		} else if (c == '\\' && i + 1 < len && s[i + 1] == 'u') {
			int u = hex4(body + i + 2, len - i - 2);
			if (u == 0) {
				snprintf(err, errlen,
					 "\\u0000 at byte %zu: NUL is not allowed in strings", i);
				return ENVELOPE_BAD;
			}
			if (u >= 0xd800 && u <= 0xdfff) {
				int low = u <= 0xdbff && i + 11 < len && s[i + 6] == '\\' &&
							  s[i + 7] == 'u'
						  ? hex4(body + i + 8, len - i - 8)
						  : -1;
				if (low < 0xdc00 || low > 0xdfff) {
					snprintf(err, errlen,
						 "unpaired UTF-16 surrogate \\u%04x at byte %zu", u,
						 i);
					return ENVELOPE_BAD;
				}
				i += 6; /* the low half, checked */
			}
			i += 2; /* the hex digits are plain ASCII, scanned as such */
			continue;
		} else if (c == '\\') {
			i += 2;
			continue;
		}
		i++;
	}
	if (most > max_events) {
		snprintf(err, errlen, "%zu events in one envelope; at most %zu are accepted", most,
			 max_events);
		return ENVELOPE_TOO_MANY;
	}
	return ENVELOPE_OK;
}

/*
 * Looks up a string field at path; absent and JSON null give NULL (ok),
 * any other non-string is an error. Empty strings become NULL.
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
	if (strlen(s) > MAX_FIELD) {
		snprintf(err, errlen, "events[%zu].%s%s%s: longer than %d bytes", idx, path[0],
			 path[1] ? "." : "", path[1] ? path[1] : "", MAX_FIELD);
		return false;
	}
	*out = *s ? s : NULL;
	return true;
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
	if (!envelope_timestamp(ts, ev->timestamp, sizeof(ev->timestamp))) {
		snprintf(err, errlen, "events[%zu].timestamp: not an RFC 3339 time: '%.64s'", idx,
			 ts);
		return false;
	}
	ev->raw = serialise(e);
	return true;
}

enum envelope_status envelope_parse(const char *body, size_t len, size_t max_events,
				    struct envelope *out, char *err, size_t errlen)
{
	char yerr[256];
	memset(out, 0, sizeof(*out));

	if (len == 0) {
		snprintf(err, errlen, "empty body: expected a JSON envelope {\"events\": [...]}");
		return ENVELOPE_BAD;
	}
	if (memchr(body, '\0', len)) {
		snprintf(err, errlen, "body is not JSON: it contains a NUL byte");
		return ENVELOPE_BAD;
	}
	enum envelope_status scanned = prescan(body, len, max_events, err, errlen);
	if (scanned != ENVELOPE_OK)
		return scanned;
	/* yajl_tree_parse wants a C string. */
	char *text = xstrndup(body, len);
	yajl_val tree = yajl_tree_parse(text, yerr, sizeof(yerr));
	free(text);
	if (!tree) {
		yerr[strcspn(yerr, "\n")] = '\0';
		snprintf(err, errlen, "body is not JSON: %s", yerr);
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
	if (events->u.array.len > max_events) {
		snprintf(err, errlen, "%zu events in one envelope; at most %zu are accepted",
			 events->u.array.len, max_events);
		envelope_free(out);
		return ENVELOPE_TOO_MANY;
	}
	out->count = events->u.array.len;
	out->events = xcalloc(out->count ? out->count : 1, sizeof(struct reg_event));
	for (size_t i = 0; i < out->count; i++)
		if (!parse_event(events->u.array.values[i], i, &out->events[i], err, errlen))
			goto bad;
	return ENVELOPE_OK;
bad:
	envelope_free(out);
	return ENVELOPE_BAD;
}

void envelope_free(struct envelope *env)
{
	for (size_t i = 0; i < env->count && env->events; i++)
		free(env->events[i].raw);
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
