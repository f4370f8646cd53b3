/*
 * Unit tests for dispatcher/template.c: what `webhook add` refuses, with
 * the line and column it names; rendering on the registry's real events,
 * whole-string variables keeping their JSON type, escaping inside longer
 * strings, unknown values as null, the literal "{{", the template's own
 * layout kept byte for byte; and every output parsed back strictly.
 */
#include "json_check.h"
#include "sample_event.h"
#include "template.h"
#include "unit.h"

#include <string.h>

#define DIGEST "sha256:33d33c66ce742601e7b4219cce65aa7ecbd527d207a1e962c0f5bcb738284f43"

/* Checks tmpl; the error ("" when accepted) into a static buffer. */
static const char *check(const char *tmpl)
{
	static char err[256];
	err[0] = '\0';
	if (template_check(tmpl, strlen(tmpl), err, sizeof(err)))
		return "";
	UNIT_CHECK(err[0], "refused without a message: %s", tmpl);
	return err;
}

/* Renders tmpl for ev into out (reset first); false if refused. */
static bool render(const char *tmpl, const struct payload_event *ev, struct buf *out)
{
	buf_reset(out);
	return template_render(tmpl, strlen(tmpl), ev, out);
}

UNIT_TEST(refused_with_line_and_column)
{
	static const char *const cases[][2] = {
		{"{\n  \"text\": \"{{tagg}}\"\n}", "line 2, column 12: unknown variable {{tagg}}"},
		{"{\n \"a\": 1,\n \"text\": \"at {{tagg}}\"}",
		 "line 3, column 14: unknown variable {{tagg}}"},
		{"{\"\xc3\xa9\xc3\xa9\": \"{{ Tag }}\"}",
		 "line 1, column 9: unknown variable {{Tag}}"},
		{"{\"t\": \"{{tag\"}", "line 1, column 8: {{ is not closed by }} in this string"},
		{"{\"t\": \"x {{ }} y\"}", "line 1, column 10: {{}} names no variable"},
		{"{\"t\": \"{{{tag}}}\"}", "line 1, column 8: unknown variable {{{tag}}"},
		{"{\"{{tag}}\": 1}", "line 1, column 3: variables are not expanded in object keys"},
		{"{\"a\": 1,\n \"a\": 2}",
		 "line 2, column 8: duplicate key \"a\" in the object that ends here"},
		{"", "not JSON: empty"},
		{"{\n\"t\": [1,\n 2", "line 3, column 3: not JSON: parse error: premature EOF"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		UNIT_CHECK_STR(check(cases[i][0]), cases[i][1]);
	/* Not JSON: the place yajl stopped, as a line and column. */
	static const char *const not_json[] = {"{\"t\": }", "{\"t\": 1} // c", "{\"t\": 1,}",
					       "[1, 2", "{\"t\": \"\xc3\x28\"}"};
	for (size_t i = 0; i < sizeof(not_json) / sizeof(not_json[0]); i++) {
		const char *err = check(not_json[i]);
		UNIT_CHECK(strncmp(err, "line 1, column ", 15) == 0 && strstr(err, "JSON"),
			   "%s: %s", not_json[i], err);
	}
	/* Every variable is known, with or without spaces. */
	for (const char *const *n = template_var_names; *n; n++) {
		char tmpl[128];
		snprintf(tmpl, sizeof(tmpl), "{\"a\": \"{{%s}}\", \"b\": \"x{{ %s }}y\"}", *n, *n);
		UNIT_CHECK_STR(check(tmpl), "");
	}
	UNIT_CHECK_STR(check("{\"t\": \"{{callback_url}}\"}"),
		       "line 1, column 8: unknown variable {{callback_url}}");
}

UNIT_TEST(size_limit)
{
	struct buf t = BUF_INIT;
	buf_puts(&t, "{\"t\": \"");
	while (t.len < TEMPLATE_MAX_BYTES - 2)
		buf_putc(&t, 'x');
	buf_puts(&t, "\"}");
	char err[256];
	UNIT_CHECK(t.len == TEMPLATE_MAX_BYTES, "built %zu bytes", t.len);
	UNIT_CHECK(template_check(t.data, t.len, err, sizeof(err)), "16 KiB refused: %s", err);
	buf_puts(&t, " ");
	UNIT_CHECK(!template_check(t.data, t.len, err, sizeof(err)), "over 16 KiB accepted");
	UNIT_CHECK_STR(err, "the template is 16385 bytes, over the limit of 16384 (16 KiB)");
	buf_free(&t);
}

UNIT_TEST(whole_string_keeps_its_type)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	const char *tmpl = "{\"size\": \"{{size}}\", \"at\": \"{{ pushed_at }}\", \"tag\": "
			   "\"{{tag}}\", \"actor\": \"{{actor}}\", \"media\": \"{{media_type}}\", "
			   "\"repo_url\": \"{{repo_url}}\", \"list\": [\"{{digest}}\", 1, null]}";
	struct buf out = BUF_INIT;
	UNIT_CHECK(render(tmpl, &s.ev, &out), "refused");
	UNIT_CHECK_STR(
		buf_cstr(&out),
		"{\"size\": 344, \"at\": 1795371632, \"tag\": \"1.0\", \"actor\": \"alice\", "
		"\"media\": \"application/vnd.oci.image.manifest.v1+json\", \"repo_url\": "
		"\"http://127.0.0.1:5000/team-a/app\", \"list\": [\"" DIGEST "\", 1, null]}");
	sample_free(&s);

	/* A delete by digest: no tag, size, media type; an unknown actor; no registry known. */
	UNIT_CHECK(sample_load("10-delete-digest.json", &s), "sample not loaded");
	s.ev.actor = NULL;
	s.ev.registry_host = NULL;
	UNIT_CHECK(render(tmpl, &s.ev, &out), "refused");
	UNIT_CHECK_STR(buf_cstr(&out), "{\"size\": null, \"at\": 1795371632, \"tag\": null, "
				       "\"actor\": null, \"media\": null, \"repo_url\": null, "
				       "\"list\": [\"" DIGEST "\", 1, null]}");
	sample_free(&s);
	buf_free(&out);
}

UNIT_TEST(inside_a_string_escaped)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	s.ev.actor = "Zo\xc3\xab \"the\\admin\"\n\x01";
	s.ev.registry_url = "https://registry.example.com";
	const char *tmpl = "{\"text\": \"{{actor}} pushed {{repository}}:{{tag}} ({{size}} bytes, "
			   "{{media_type}}) at {{timestamp}}; tag {{digest}}{{ tag }}\","
			   "\"none\": \"[{{event_id}}|{{delivery_id}}]\", \"lit\": \"{\\u007b "
			   "tag}} \\\\{{tag}}\", \"url\": \"<{{registry_url}}>\"}";
	struct buf out = BUF_INIT;
	UNIT_CHECK(render(tmpl, &s.ev, &out), "refused");
	yajl_val t = JSON_PARSE(out.data, out.len);
	CHECK_JSTR(t, "text",
		   "Zo\xc3\xab \"the\\admin\"\n\x01 pushed team-a/app:1.0 (344 bytes, "
		   "application/vnd.oci.image.manifest.v1+json) at 2026-11-22T18:20:32.255357Z; "
		   "tag " DIGEST "1.0");
	CHECK_JSTR(t, "none",
		   "[7e85b01a-1fb2-4e87-9fdb-3aba92e7461b|"
		   "0b9d1c5e-6f1a-4d5e-9a7b-3c2d1e0f4a5b]");
	/* "{\u007b" is a literal "{{"; after an escaped backslash, "{{" is a variable. */
	CHECK_JSTR(t, "lit", "{{ tag}} \\1.0");
	CHECK_JSTR(t, "url", "<https://registry.example.com>");
	yajl_tree_free(t);

	/* Unknown values are empty inside a string. */
	s.ev.actor = "";
	s.ev.has_size = false;
	s.ev.event_id = NULL;
	UNIT_CHECK(render("[\"by {{actor}}, {{size}} bytes, id {{event_id}}.\"]", &s.ev, &out),
		   "refused");
	UNIT_CHECK_STR(buf_cstr(&out), "[\"by ,  bytes, id .\"]");
	sample_free(&s);
	buf_free(&out);
}

UNIT_TEST(layout_kept_and_keys_copied)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	/* A Mattermost incoming webhook, as a user writes it. */
	const char *tmpl =
		"{\n"
		"\t\"username\" : \"registry\",\n"
		"\t\"text\" : \"#### {{action}}: {{repository}}:{{tag}}\",\n"
		"\t\"props\" : { \"card\" : \"by {{actor}}\", \"n\" : [ 1.5e3 , true ] }\n"
		"}\n";
	struct buf out = BUF_INIT;
	UNIT_CHECK(render(tmpl, &s.ev, &out), "refused");
	UNIT_CHECK_STR(buf_cstr(&out),
		       "{\n"
		       "\t\"username\" : \"registry\",\n"
		       "\t\"text\" : \"#### push: team-a/app:1.0\",\n"
		       "\t\"props\" : { \"card\" : \"by alice\", \"n\" : [ 1.5e3 , true ] }\n"
		       "}\n");
	/* A template that is one string, and one with no variable at all. */
	UNIT_CHECK(render("\"{{namespace}}/{{name}}\"", &s.ev, &out), "refused");
	UNIT_CHECK_STR(buf_cstr(&out), "\"team-a/app\"");
	UNIT_CHECK(render("{\"}}\": \"}} {\"}", &s.ev, &out), "refused");
	UNIT_CHECK_STR(buf_cstr(&out), "{\"}}\": \"}} {\"}");
	sample_free(&s);
	buf_free(&out);
}

UNIT_TEST(refusals_leave_the_output)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	static const char *const bad[] = {"{\"a\": \"{{tag}}\", \"b\": \"{{nope}}\"}", "{", ""};
	struct buf out = BUF_INIT;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		buf_reset(&out);
		buf_puts(&out, "kept");
		UNIT_CHECK(!template_render(bad[i], strlen(bad[i]), &s.ev, &out), "%s rendered",
			   bad[i]);
		UNIT_CHECK_STR(buf_cstr(&out), "kept");
	}
	s.ev.action = "pull";
	UNIT_CHECK(!render("{}", &s.ev, &out), "a pull rendered");
	sample_free(&s);
	buf_free(&out);
}

int main(void)
{
	UNIT_RUN(refused_with_line_and_column);
	UNIT_RUN(size_limit);
	UNIT_RUN(whole_string_keeps_its_type);
	UNIT_RUN(inside_a_string_escaped);
	UNIT_RUN(layout_kept_and_keys_copied);
	UNIT_RUN(refusals_leave_the_output);
	return UNIT_DONE();
}
