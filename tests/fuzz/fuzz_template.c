/*
 * libFuzzer harness for dispatcher/template.c. The input is a template,
 * then NUL-separated values for an event: action, repository, tag, digest,
 * actor, media_type, event_id, delivery_id, registry_url, registry_host,
 * timestamp and size (an empty value is unknown; values may be any bytes,
 * invalid UTF-8 included). Checked: no sanitizer report; the check and the
 * rendering agree (a template that passes template_check() renders, for
 * any event whose action is push or delete, and one that fails it does
 * not, leaving the output as it was); and what renders is JSON that
 * common/jsonparse, the strictest reader reghook has, accepts. A template
 * with no "{{" renders to itself, byte for byte.
 */
#include "buf.h"
#include "jsonparse.h"
#include "template.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NFIELDS 13

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = xstrndup((const char *)data, size);
	const char *field[NFIELDS] = {NULL};
	size_t nfields = 0, at = 0, tmpl_len = strlen(copy);
	while (nfields < NFIELDS) {
		field[nfields++] = copy + at;
		const char *nul = memchr(data + at, '\0', size - at);
		if (!nul)
			break;
		at = (size_t)((const uint8_t *)nul - data) + 1;
	}
	for (size_t i = 1; i < NFIELDS; i++)
		if (field[i] && !*field[i])
			field[i] = NULL;
	const char *tmpl = field[0];
	struct payload_event ev = {
		.action = field[1] ? field[1] : "push",
		.namespace_ = "team-a",
		.name = "app",
		.repository = field[2],
		.tag = field[3],
		.digest = field[4],
		.actor = field[5],
		.media_type = field[6],
		.event_id = field[7],
		.delivery_id = field[8],
		.registry_url = field[9],
		.registry_host = field[10],
		.timestamp = field[11],
		.occurred_at = field[12] ? strtoll(field[12], NULL, 10) : 1795371632,
		.size = field[12] ? strtoll(field[12], NULL, 10) : 0,
		.has_size = field[12] != NULL,
	};

	char err[256];
	bool checked = template_check(tmpl, tmpl_len, err, sizeof(err));
	bool action_ok = payload_action_ok(&ev);
	struct buf out = BUF_INIT;
	buf_puts(&out, "prefix");
	bool rendered = template_render(tmpl, tmpl_len, &ev, &out);
	if (rendered != (checked && action_ok)) {
		fprintf(stderr, "check %d (%s), action ok %d, but rendered %d\n", checked,
			checked ? "" : err, action_ok, rendered);
		abort();
	}
	if (!rendered && strcmp(buf_cstr(&out), "prefix") != 0) {
		fprintf(stderr, "a refused template changed the output: %s\n", out.data);
		abort();
	}
	if (rendered) {
		const char *text = out.data + 6;
		size_t len = out.len - 6;
		const struct jsonparse_limits lim = {.max_depth = TEMPLATE_MAX_DEPTH};
		yajl_val tree = NULL;
		if (jsonparse(text, len, &lim, &tree, err, sizeof(err)) != JSONPARSE_OK) {
			fprintf(stderr, "rendered to what is not JSON (%s):\n%s\n", err, text);
			abort();
		}
		yajl_tree_free(tree);
		if (!memmem(tmpl, tmpl_len, "{{", 2) &&
		    (len != tmpl_len || memcmp(text, tmpl, len) != 0)) {
			fprintf(stderr, "a template without variables changed:\n%s\n", text);
			abort();
		}
	}
	buf_free(&out);
	free(copy);
	return 0;
}
