/*
 * render: prints what reghook would send for one of the registry's real
 * envelopes in one format, for tests that hand the message to a real
 * consumer (tests/integration/test_formats_sdk.py gives CloudEvents output
 * to the CloudEvents SDK for JavaScript).
 *
 *   render FORMAT SAMPLE [FIELD=VALUE]...
 *
 * SAMPLE is a file name under tests/fixtures/samples (run from the
 * checkout's root); each FIELD=VALUE replaces a field of the event
 * (registry_url, actor, tag, digest, source_name, event_id, template; an
 * empty VALUE makes it unknown). Prints {"headers": {name: value}, "body":
 * "text"} with the Content-Type among the headers. Exits 1 when the event
 * cannot be rendered, 2 on bad usage.
 */
#include "../unit/sample_event.h"
#include "buf.h"
#include "formats.h"

#include <stdio.h>
#include <string.h>

static int usage(const char *why)
{
	fprintf(stderr, "render: %s\nusage: render FORMAT SAMPLE [FIELD=VALUE]...\n", why);
	return 2;
}

int main(int argc, char **argv)
{
	enum formats_format f;
	struct sample s;
	if (argc < 3)
		return usage("too few arguments");
	if (!formats_parse(argv[1], &f))
		return usage("unknown format");
	if (!sample_load(argv[2], &s))
		return usage("sample not readable");
	const char *tmpl = NULL;
	struct {
		const char *name;
		const char **field;
	} fields[] = {
		{"registry_url", &s.ev.registry_url},
		{"actor", &s.ev.actor},
		{"tag", &s.ev.tag},
		{"digest", &s.ev.digest},
		{"source_name", &s.ev.source_name},
		{"event_id", &s.ev.event_id},
		{"template", &tmpl},
	};
	for (int i = 3; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		size_t k = 0, n = sizeof(fields) / sizeof(fields[0]);
		while (eq && k < n &&
		       !(strlen(fields[k].name) == (size_t)(eq - argv[i]) &&
			 strncmp(fields[k].name, argv[i], (size_t)(eq - argv[i])) == 0))
			k++;
		if (!eq || k == n) {
			sample_free(&s);
			return usage("unknown field");
		}
		*fields[k].field = eq[1] ? eq + 1 : NULL;
	}

	struct buf body = BUF_INIT, out = BUF_INIT;
	struct payload_headers h = {0};
	int rc = 1;
	if (formats_render(f, &s.ev, NULL, tmpl, &body, &h)) {
		const char *type = formats_content_type(f);
		buf_puts(&out, "{\"headers\":{\"content-type\":");
		buf_puts(&out, type ? "\"" : "\"application/json\"");
		if (type)
			buf_printf(&out, "%s\"", type);
		for (size_t i = 0; i < h.n; i++) {
			buf_putc(&out, ',');
			buf_json_str(&out, h.h[i].name, strlen(h.h[i].name));
			buf_putc(&out, ':');
			buf_json_str(&out, h.h[i].value, strlen(h.h[i].value));
		}
		buf_puts(&out, "},\"body\":");
		buf_json_str(&out, body.data, body.len);
		buf_puts(&out, "}\n");
		fputs(out.data, stdout);
		rc = 0;
	} else {
		fprintf(stderr, "render: the event cannot be rendered as %s\n", argv[1]);
	}
	payload_headers_free(&h);
	buf_free(&body);
	buf_free(&out);
	sample_free(&s);
	return rc;
}
