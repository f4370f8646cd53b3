/*
 * envelope: parsing and classifying the registry's notification envelopes,
 * `{"events": [...]}` as distribution 2.8 (v1 media type) and 3.x (v2)
 * send them. Pure functions over bytes: no I/O, so the unit tests feed them
 * the samples directly.
 *
 * Parsing is strict and bounded (common/jsonparse): the caller caps the
 * body size; comments, nesting deeper than ENVELOPE_MAX_DEPTH, duplicate
 * keys, and strings that are not well-formed UTF-8 or hold \u0000 or an
 * unpaired surrogate escape (which yajl would cut or replace, and
 * PostgreSQL's jsonb refuses) are refused as the text is read, and so is
 * an events array longer than allowed, before the rest of it is built. So
 * an event is stored as sent or not at all. Every
 * error names the field (events[2].target.digest: not a string), so a
 * registry operator reading the 400 knows what is wrong.
 */
#ifndef REGHOOK_ENVELOPE_H
#define REGHOOK_ENVELOPE_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>

#define ENVELOPE_MAX_DEPTH 32

enum event_kind {
	EVENT_IGNORED,	     /* blob push, pull, mount, unknown action: counted, not stored */
	EVENT_IMAGE_PUSH,    /* manifest push with a tag: stored, triggers push webhooks */
	EVENT_MANIFEST_PUSH, /* manifest push without a tag: stored, triggers nothing */
	EVENT_DELETE,	     /* manifest or tag delete: stored, triggers delete webhooks */
};

struct reg_event {
	enum event_kind kind;
	/* In fields; NULL when absent or empty. */
	const char *id;
	const char *action;
	const char *repository;
	const char *tag;
	const char *digest;
	const char *media_type;
	const char *request_id;
	const char *actor;
	char timestamp[40]; /* normalised ISO 8601, at most microseconds */
	char *raw;	    /* owned: the event re-serialised as JSON (kept kinds only) */
	char *fields;	    /* owned: the strings above, one after another */
	size_t bytes;	    /* held: fields and raw; and its prefixes, once in a batch */
};

/*
 * Once parsed, an envelope holds its events' fields and raw JSON only: the
 * tree, which can take 45 times the body's size (an array of small
 * numbers), is freed before envelope_parse returns, so a request waiting
 * for its batch holds no more than its events.
 */
struct envelope {
	void *tree; /* owned yajl tree, while parsing */
	size_t count;
	struct reg_event *events; /* owned array of count */
};

enum envelope_status {
	ENVELOPE_OK,
	ENVELOPE_BAD,	   /* not JSON, not an envelope, or a malformed event: 400 */
	ENVELOPE_TOO_MANY, /* more events than allowed: 413 */
};

enum envelope_status envelope_parse(const char *body, size_t len, size_t max_events,
				    struct envelope *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void envelope_free(struct envelope *env);

enum event_kind envelope_classify(const char *action, const char *media_type, const char *url,
				  const char *tag);
/* Normalises an RFC 3339 timestamp (1-9 fraction digits, Z or offset). */
bool envelope_timestamp(const char *in, char *out, size_t outlen)
	__attribute__((warn_unused_result));
/* Appends the event as one element of a batch for reghook.ingest(). */
void envelope_event_json(struct buf *b, const struct reg_event *ev, int index, long long source_id);

#endif
