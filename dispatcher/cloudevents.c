/*
 * cloudevents: see cloudevents.h.
 *
 * The attributes are computed once, into values[], and then written either
 * as headers or as members of the structured object, so that the two
 * modes cannot disagree.
 */
#include "cloudevents.h"
#include "jsongen.h"
#include "jsonparse.h"

#include <stdlib.h>
#include <string.h>

enum attr { A_SPECVERSION, A_ID, A_SOURCE, A_TYPE, A_SUBJECT, A_TIME, A_ACTOR, A_COUNT };

/* Attribute names: lower-case letters and digits only, as CloudEvents requires. */
static const char *const attr_name[A_COUNT] = {
	"specversion", "id", "source", "type", "subject", "time", "actor",
};
static const char *const header_name[A_COUNT] = {
	"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time", "ce-actor",
};

static bool utf8_ok(const char *s)
{
	size_t bad;
	return !s || jsonparse_utf8_ok((const unsigned char *)s, strlen(s), &bad);
}

/* A character that may stand as is in a URI reference's path (RFC 3986 unreserved). */
static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static void source(const struct payload_event *ev, struct buf *out)
{
	if (ev->registry_url && *ev->registry_url && payload_repo_url(ev, out))
		return;
	const char *name = ev->source_name && *ev->source_name ? ev->source_name : "reghook";
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (unreserved(*p))
			buf_putc(out, (char)*p);
		else
			buf_printf(out, "%%%02X", *p);
	}
}

/* Fills values[] (owned, NULL for an absent attribute); false if the event cannot be one. */
static bool attributes(const struct payload_event *ev, char *values[A_COUNT])
{
	memset(values, 0, A_COUNT * sizeof(char *));
	const char *id = ev->event_id && *ev->event_id ? ev->event_id : ev->delivery_id;
	if (!payload_action_ok(ev) || !id || !*id)
		return false;
	const char *strings[] = {id,	    ev->repository,  ev->tag,	      ev->digest,
				 ev->actor, ev->source_name, ev->registry_url};
	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
		if (!utf8_ok(strings[i]))
			return false;

	struct buf b = BUF_INIT;
	values[A_SPECVERSION] = xstrdup("1.0");
	values[A_ID] = xstrdup(id);
	source(ev, &b);
	values[A_SOURCE] = buf_steal(&b);
	values[A_TYPE] =
		xstrdup(payload_is_push(ev) ? CLOUDEVENTS_TYPE_PUSHED : CLOUDEVENTS_TYPE_DELETED);
	payload_subject(ev, &b);
	values[A_SUBJECT] = buf_steal(&b);
	char when[PAYLOAD_TIME_MAX];
	payload_time(ev, when);
	values[A_TIME] = xstrdup(when);
	values[A_ACTOR] = ev->actor && *ev->actor ? xstrdup(ev->actor) : NULL;
	return true;
}

static void free_values(char *values[A_COUNT])
{
	for (int i = 0; i < A_COUNT; i++)
		free(values[i]);
}

void cloudevents_header_encode(const char *s, struct buf *out)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p > 0x20 && *p < 0x7f && *p != '"' && *p != '%')
			buf_putc(out, (char)*p);
		else
			buf_printf(out, "%%%02X", *p);
	}
}

/* The body: the event object alone (attrs NULL, binary mode) or the whole structured event. */
static bool body_json(const struct payload_event *ev, char *const *attrs, struct buf *body)
{
	struct jsongen j;
	if (!jsongen_init(&j))
		return false;
	if (attrs) {
		jsongen_map_open(&j, NULL);
		for (int i = 0; i < A_COUNT; i++)
			if (attrs[i])
				jsongen_kv_str(&j, attr_name[i], attrs[i]);
		jsongen_kv_str(&j, "datacontenttype", "application/json");
		jsongen_str(&j, "data");
	}
	payload_event_object(&j, ev);
	if (attrs)
		jsongen_map_close(&j);
	return jsongen_finish(&j, body);
}

bool cloudevents_binary(const struct payload_event *ev, struct payload_headers *headers,
			struct buf *body)
{
	char *values[A_COUNT];
	if (!attributes(ev, values))
		return false;
	bool ok = body_json(ev, NULL, body);
	for (int i = 0; ok && i < A_COUNT; i++) {
		if (!values[i])
			continue;
		struct buf v = BUF_INIT;
		cloudevents_header_encode(values[i], &v);
		payload_headers_add(headers, header_name[i], buf_steal(&v));
	}
	free_values(values);
	return ok;
}

bool cloudevents_structured(const struct payload_event *ev, struct buf *body)
{
	char *values[A_COUNT];
	if (!attributes(ev, values))
		return false;
	bool ok = body_json(ev, values, body);
	free_values(values);
	return ok;
}
