/*
 * formats: the webhook formats by name (the `format` field of a webhook,
 * SPEC "Webhooks" and "Payloads"), and the one place that turns an event
 * into the body and extra headers of the format a webhook chose. The
 * request builder calls formats_render(); `webhook add`/`set` check a
 * name with formats_parse() and a template with template_check().
 *
 * The table in formats.c is the list: name, Content-Type, help text.
 * Pure: no I/O.
 */
#ifndef REGHOOK_FORMATS_H
#define REGHOOK_FORMATS_H

#include "buf.h"
#include "payload.h"

#include <stdbool.h>

enum formats_format {
	FORMATS_DOCKERHUB,		/* payload.h */
	FORMATS_REGISTRY,		/* the registry's event as received */
	FORMATS_CLOUDEVENTS,		/* cloudevents.h, binary mode */
	FORMATS_CLOUDEVENTS_STRUCTURED, /* cloudevents.h, structured mode */
	FORMATS_SLACK,			/* chat.h */
	FORMATS_DISCORD,		/* chat.h */
	FORMATS_TEAMS,			/* chat.h */
	FORMATS_TEMPLATE,		/* template.h */
	FORMATS_COUNT,
};

/* The format called name; false for an unknown name. */
bool formats_parse(const char *name, enum formats_format *out) __attribute__((warn_unused_result));
const char *formats_name(enum formats_format f);
/* One line on what the receiver gets, for --help and error messages. */
const char *formats_help(enum formats_format f);
/*
 * The Content-Type the format must be sent with, or NULL when the
 * webhook's own content_type applies. CloudEvents fixes it: in binary
 * mode it is the data's content type (the binding forbids anything else),
 * in structured mode the event format's media type.
 */
const char *formats_content_type(enum formats_format f);

/*
 * Appends ev in format f to body and the format's extra headers to
 * headers. raw is the registry's event as received (NULL for a test
 * event: `registry` then sends the dockerhub body); tmpl is the webhook's
 * template (for FORMATS_TEMPLATE; NUL-terminated). False, with nothing
 * appended, if the event cannot be put in that format (see each module).
 */
bool formats_render(enum formats_format f, const struct payload_event *ev, const char *raw,
		    const char *tmpl, struct buf *body, struct payload_headers *headers)
	__attribute__((warn_unused_result));

#endif
