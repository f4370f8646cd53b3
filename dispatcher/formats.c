/*
 * formats: see formats.h.
 */
#include "formats.h"
#include "chat.h"
#include "cloudevents.h"
#include "template.h"

#include <string.h>

static const struct {
	const char *name;
	const char *content_type; /* NULL: the webhook's */
	const char *help;
} table[FORMATS_COUNT] = {
	[FORMATS_DOCKERHUB] = {"dockerhub", NULL, "Docker Hub's webhook JSON (the default)"},
	[FORMATS_REGISTRY] = {"registry", NULL, "the registry's own event, as it was received"},
	[FORMATS_CLOUDEVENTS] = {"cloudevents", "application/json",
				 "CloudEvents 1.0, binary mode: ce-* headers, the event as the "
				 "body"},
	[FORMATS_CLOUDEVENTS_STRUCTURED] = {"cloudevents-structured", CLOUDEVENTS_STRUCTURED_TYPE,
					    "CloudEvents 1.0, structured mode: one "
					    "application/cloudevents+json body"},
	[FORMATS_SLACK] = {"slack", NULL, "a Slack message for an incoming webhook"},
	[FORMATS_DISCORD] = {"discord", NULL, "a Discord message for a channel webhook"},
	[FORMATS_TEAMS] = {"teams", NULL, "an Adaptive Card for a Microsoft Teams workflow"},
	[FORMATS_TEMPLATE] = {"template", NULL, "the webhook's own JSON template"},
};

bool formats_parse(const char *name, enum formats_format *out)
{
	for (int f = 0; name && f < FORMATS_COUNT; f++) {
		if (strcmp(table[f].name, name) == 0) {
			*out = (enum formats_format)f;
			return true;
		}
	}
	return false;
}

const char *formats_name(enum formats_format f)
{
	return table[f].name;
}

const char *formats_help(enum formats_format f)
{
	return table[f].help;
}

const char *formats_content_type(enum formats_format f)
{
	return table[f].content_type;
}

bool formats_render(enum formats_format f, const struct payload_event *ev, const char *raw,
		    const char *tmpl, struct buf *body, struct payload_headers *headers)
{
	switch (f) {
	case FORMATS_REGISTRY:
		if (raw) {
			buf_puts(body, raw);
			return true;
		}
		return payload_registry_event(ev, body);
	case FORMATS_DOCKERHUB:
		return payload_dockerhub(ev, body);
	case FORMATS_CLOUDEVENTS:
		return cloudevents_binary(ev, headers, body);
	case FORMATS_CLOUDEVENTS_STRUCTURED:
		return cloudevents_structured(ev, body);
	case FORMATS_SLACK:
		return chat_slack(ev, body);
	case FORMATS_DISCORD:
		return chat_discord(ev, body);
	case FORMATS_TEAMS:
		return chat_teams(ev, body);
	case FORMATS_TEMPLATE:
		return tmpl && template_render(tmpl, strlen(tmpl), ev, body);
	case FORMATS_COUNT:
		break;
	}
	return false;
}
