/*
 * libFuzzer harness for dispatcher/urltemplate.c. The input is a webhook
 * URL template, then NUL-separated values for the six variables. Checked:
 * no sanitizer report; a template that urltemplate_check() accepts always
 * expands (the promise that lets `webhook add` validate once); the
 * expansion of every template is exactly its literal text and its values
 * percent-encoded (no raw byte of a value outside the unreserved set), as
 * promised() rebuilds it here; a failed expansion leaves the output as it
 * was.
 */
#include "buf.h"
#include "urltemplate.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The expansion the header promises, built here without urltemplate.c: the
 * template's text outside braces as written, and for each {name} its value
 * with every byte outside ALPHA DIGIT - . _ ~ written as %XX (upper-case
 * hex), and a value of "." or ".." all of it. False if the template is not
 * made only of such parts.
 */
static bool promised(const char *tmpl, const struct urltemplate_vars *vars, struct buf *want)
{
	const struct {
		const char *name, *value;
	} known[] = {
		{"namespace", vars->namespace_},  {"name", vars->name},
		{"repository", vars->repository}, {"tag", vars->tag},
		{"digest", vars->digest},	  {"action", vars->action},
	};
	for (const char *p = tmpl; *p; p++) {
		if (*p == '}')
			return false;
		if (*p != '{') {
			buf_putc(want, *p);
			continue;
		}
		const char *close = strchr(p + 1, '}');
		if (!close)
			return false;
		size_t len = (size_t)(close - p - 1);
		size_t i = 0;
		while (i < sizeof(known) / sizeof(known[0]) &&
		       !(strlen(known[i].name) == len && memcmp(known[i].name, p + 1, len) == 0))
			i++;
		if (i == sizeof(known) / sizeof(known[0]))
			return false;
		const char *value = known[i].value;
		bool dots = value && (strcmp(value, ".") == 0 || strcmp(value, "..") == 0);
		for (const unsigned char *v = (const unsigned char *)value; v && *v; v++) {
			if (dots)
				buf_printf(want, "%%%02X", *v);
			else if ((*v >= 'A' && *v <= 'Z') || (*v >= 'a' && *v <= 'z') ||
				 (*v >= '0' && *v <= '9') || *v == '-' || *v == '.' || *v == '_' ||
				 *v == '~')
				buf_putc(want, (char)*v);
			else
				buf_printf(want, "%%%02X", *v);
		}
		p = close;
	}
	return true;
}

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
	if (expanded) {
		/* Every template that expands: exactly the promised text. */
		struct buf want = BUF_INIT;
		if (!promised(tmpl, &vars, &want)) {
			fprintf(stderr, "'%s' expanded but is not literal text and {variable}s\n",
				tmpl);
			abort();
		}
		if (strcmp(out.data + 7, buf_cstr(&want)) != 0) {
			fprintf(stderr, "'%s' expanded to '%s', want '%s'\n", tmpl, out.data + 7,
				buf_cstr(&want));
			abort();
		}
		buf_free(&want);
	}
	struct buf stripped = BUF_INIT;
	if (urltemplate_strip_credentials(tmpl, &stripped) && stripped.len > strlen(tmpl))
		abort();
	buf_free(&stripped);
	buf_free(&out);
	free(copy);
	return 0;
}
