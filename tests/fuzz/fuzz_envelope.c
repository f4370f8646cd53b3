/*
 * libFuzzer harness for dispatcher/envelope.c: any bytes as a POST /events
 * body. envelope_parse() must answer every input without a sanitizer
 * report, and every envelope it accepts must turn into batch JSON that
 * yajl parses back (the batch goes to reghook.ingest() as jsonb, so a bad
 * escape there would fail a whole batch of other registries' events).
 */
#include "buf.h"
#include "envelope.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <yajl/yajl_tree.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope env;
	char err[512];
	enum envelope_status st =
		envelope_parse((const char *)data, size, 1000, &env, err, sizeof(err));
	if (st != ENVELOPE_OK) {
		envelope_free(&env);
		return 0;
	}
	struct buf json = BUF_INIT;
	buf_putc(&json, '[');
	for (size_t i = 0; i < env.count; i++) {
		const struct reg_event *ev = &env.events[i];
		if (ev->kind == EVENT_IGNORED)
			continue;
		if (json.len > 1)
			buf_putc(&json, ',');
		envelope_event_json(&json, ev, (int)i, 1);
	}
	buf_putc(&json, ']');
	char yerr[256];
	yajl_val tree = yajl_tree_parse(buf_cstr(&json), yerr, sizeof(yerr));
	if (!tree) {
		fprintf(stderr, "batch JSON does not parse: %s\n%s\n", yerr, buf_cstr(&json));
		abort();
	}
	yajl_tree_free(tree);
	buf_free(&json);
	envelope_free(&env);
	return 0;
}
