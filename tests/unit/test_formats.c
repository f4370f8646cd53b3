/*
 * Unit tests for dispatcher/formats.c: every format name the SPEC lists
 * and no other, the Content-Type each fixes, and that rendering through
 * formats_render() gives each format's body (parsed back strictly) and
 * extra headers for CloudEvents' binary mode only.
 */
#include "formats.h"
#include "json_check.h"
#include "sample_event.h"
#include "unit.h"

#include <string.h>

static const char *const names[] = {
	"dockerhub", "registry", "cloudevents", "cloudevents-structured",
	"slack",     "discord",	 "teams",	"template"};

UNIT_TEST(names_and_content_types)
{
	UNIT_CHECK(sizeof(names) / sizeof(names[0]) == FORMATS_COUNT, "the table has changed");
	for (size_t i = 0; i < FORMATS_COUNT; i++) {
		enum formats_format f;
		UNIT_CHECK(formats_parse(names[i], &f) && f == (enum formats_format)i,
			   "%s not parsed", names[i]);
		UNIT_CHECK_STR(formats_name((enum formats_format)i), names[i]);
		UNIT_CHECK(formats_help((enum formats_format)i)[0], "%s has no help", names[i]);
	}
	static const char *const bad[] = {"", "Slack", "cloudevents-binary", "json", NULL};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum formats_format f;
		UNIT_CHECK(!formats_parse(bad[i], &f), "%s parsed", bad[i] ? bad[i] : "NULL");
	}
	UNIT_CHECK_STR(formats_content_type(FORMATS_CLOUDEVENTS), "application/json");
	UNIT_CHECK_STR(formats_content_type(FORMATS_CLOUDEVENTS_STRUCTURED),
		       "application/cloudevents+json");
	UNIT_CHECK_STR(formats_content_type(FORMATS_SLACK), NULL);
	UNIT_CHECK_STR(formats_content_type(FORMATS_DOCKERHUB), NULL);
}

UNIT_TEST(render_each_format)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	/* The first key of each body tells which format made it. */
	static const char *const first_key[] = {"action", "id",	     "action", "specversion",
						"text",	  "content", "type",   "who"};
	for (size_t i = 0; i < FORMATS_COUNT; i++) {
		struct buf body = BUF_INIT;
		struct payload_headers h = {0};
		bool ok = formats_render((enum formats_format)i, &s.ev, "{\"id\": \"raw\"}",
					 "{\"who\": \"{{actor}}\"}", &body, &h);
		UNIT_CHECK(ok, "%s refused", names[i]);
		yajl_val t = ok ? JSON_PARSE(body.data, body.len) : NULL;
		UNIT_CHECK(t && YAJL_IS_OBJECT(t) && t->u.object.len > 0 &&
				   strcmp(t->u.object.keys[0], first_key[i]) == 0,
			   "%s: %s", names[i], buf_cstr(&body));
		UNIT_CHECK(h.n == (i == FORMATS_CLOUDEVENTS ? 7u : 0u), "%s: %zu headers", names[i],
			   h.n);
		yajl_tree_free(t);
		payload_headers_free(&h);
		buf_free(&body);
	}
	/*
	 * A test event has no raw event: registry sends one shaped as the
	 * registry's, without the dockerhub body's callback_url.
	 */
	struct buf body = BUF_INIT;
	struct payload_headers h = {0};
	UNIT_CHECK(formats_render(FORMATS_REGISTRY, &s.ev, NULL, NULL, &body, &h), "refused");
	yajl_val reg = yajl_tree_parse(buf_cstr(&body), NULL, 0);
	UNIT_CHECK(reg && YAJL_IS_OBJECT(reg) && strcmp(reg->u.object.keys[0], "id") == 0 &&
			   yajl_tree_get(reg, (const char *[]){"target", "repository", NULL},
					 yajl_t_string) &&
			   !strstr(buf_cstr(&body), "callback"),
		   "%s", buf_cstr(&body));
	if (reg)
		yajl_tree_free(reg);
	buf_reset(&body);
	UNIT_CHECK(!formats_render(FORMATS_TEMPLATE, &s.ev, NULL, NULL, &body, &h),
		   "no template rendered");
	UNIT_CHECK(!formats_render(FORMATS_TEMPLATE, &s.ev, NULL, "{\"a\": \"{{x}}\"}", &body, &h),
		   "a bad template rendered");
	UNIT_CHECK(body.len == 0 && h.n == 0, "output left behind");
	buf_free(&body);
	sample_free(&s);
}

int main(void)
{
	UNIT_RUN(names_and_content_types);
	UNIT_RUN(render_each_format);
	return UNIT_DONE();
}
