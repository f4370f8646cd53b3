/*
 * sample_event: a struct payload_event made from one of the registry's
 * real envelopes in tests/fixtures/samples (the tests run from the
 * checkout's root), as the request builder makes it from a stored event:
 * namespace team-a, repository team-a/app, a delivery id, the source
 * "main". Header only, for the format tests.
 */
#ifndef REGHOOK_SAMPLE_EVENT_H
#define REGHOOK_SAMPLE_EVENT_H

#include "buf.h"
#include "envelope.h"
#include "payload.h"

#include <stdio.h>
#include <string.h>
#include <yajl/yajl_tree.h>

struct sample {
	struct envelope env;
	yajl_val raw; /* the event as stored (its raw JSON), parsed */
	struct payload_event ev;
};

/* Reads and parses samples/<file>; false (and a message on stderr) if it cannot. */
static inline bool sample_load(const char *file, struct sample *s)
{
	char path[256], err[256];
	snprintf(path, sizeof(path), "tests/fixtures/samples/%s", file);
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "  cannot open %s\n", path);
		return false;
	}
	struct buf body = BUF_INIT;
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&body, chunk, n);
	fclose(f);
	enum envelope_status st =
		envelope_parse(body.data, body.len, 10, &s->env, err, sizeof(err));
	buf_free(&body);
	if (st != ENVELOPE_OK || s->env.count != 1) {
		fprintf(stderr, "  %s: %s\n", path, err);
		return false;
	}
	const struct reg_event *r = &s->env.events[0];
	s->raw = yajl_tree_parse(r->raw, NULL, 0);
	if (!s->raw) {
		fprintf(stderr, "  %s: its raw JSON does not parse\n", path);
		envelope_free(&s->env);
		return false;
	}
	yajl_val event = s->raw;
	yajl_val size =
		yajl_tree_get(event, (const char *[]){"target", "size", NULL}, yajl_t_number);
	yajl_val host =
		yajl_tree_get(event, (const char *[]){"request", "host", NULL}, yajl_t_string);
	s->ev = (struct payload_event){
		.action = r->action,
		.namespace_ = "team-a",
		.name = "app",
		.repository = r->repository,
		.tag = r->tag,
		.digest = r->digest,
		.actor = r->actor,
		.occurred_at = 1795371632,
		.description = "Team A's images",
		.is_private = true,
		.namespace_created_at = 1795300000,
		.callback_url = "http://127.0.0.1:8080/callback/SECRET-TOKEN-d41d8cd98f00",
		.registry_url = "",
		.registry_host = host ? YAJL_GET_STRING(host) : NULL,
		.event_id = r->id,
		.delivery_id = "0b9d1c5e-6f1a-4d5e-9a7b-3c2d1e0f4a5b",
		.timestamp = r->timestamp,
		.media_type = r->media_type,
		.size = size ? YAJL_GET_INTEGER(size) : 0,
		.has_size = size != NULL,
		.source_name = "main",
	};
	return true;
}

static inline void sample_free(struct sample *s)
{
	envelope_free(&s->env);
	yajl_tree_free(s->raw);
}

#endif
