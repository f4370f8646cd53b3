/*
 * Unit tests for dispatcher/cloudevents.c, on the registry's real
 * envelopes: every attribute of both modes, the event object as data, the
 * header encoding of the HTTP binding (its own example included), the
 * attributes that are absent when unknown, and the refusals. The SDK's own
 * reading of the same output is tests/integration/test_formats_sdk.py.
 */
#include "cloudevents.h"
#include "json_check.h"
#include "sample_event.h"
#include "unit.h"

#include <string.h>

#define PUSH_ID "7e85b01a-1fb2-4e87-9fdb-3aba92e7461b"
#define DIGEST "sha256:33d33c66ce742601e7b4219cce65aa7ecbd527d207a1e962c0f5bcb738284f43"

static void check_event_object(yajl_val data, const char *path)
{
	CHECK_JKEYS(data, path, "action", "namespace", "repository", "name", "tag", "digest",
		    "media_type", "size", "actor", "timestamp", "registry_url", "event_id");
}

UNIT_TEST(binary_push_of_a_real_event)
{
	struct sample s;
	if (!sample_load("03-push-manifest-tag.json", &s)) {
		UNIT_CHECK(false, "sample not loaded");
		return;
	}
	struct payload_headers h = {0};
	struct buf body = BUF_INIT;
	UNIT_CHECK(cloudevents_binary(&s.ev, &h, &body), "refused");
	const char *const want[][2] = {
		{"ce-specversion", "1.0"},
		{"ce-id", PUSH_ID},
		{"ce-source", "main"},
		{"ce-type", "io.reghook.image.pushed"},
		{"ce-subject", "team-a/app:1.0"},
		{"ce-time", "2026-11-22T18:20:32.255357Z"},
		{"ce-actor", "alice"},
	};
	UNIT_CHECK(h.n == 7, "%zu headers, want 7", h.n);
	for (size_t i = 0; i < 7 && i < h.n; i++) {
		UNIT_CHECK_STR(h.h[i].name, want[i][0]);
		UNIT_CHECK_STR(h.h[i].value, want[i][1]);
	}
	yajl_val t = JSON_PARSE(body.data, body.len);
	check_event_object(t, "");
	CHECK_JSTR(t, "action", "push");
	CHECK_JSTR(t, "namespace", "team-a");
	CHECK_JSTR(t, "repository", "team-a/app");
	CHECK_JSTR(t, "name", "app");
	CHECK_JSTR(t, "tag", "1.0");
	CHECK_JSTR(t, "digest", DIGEST);
	CHECK_JSTR(t, "media_type", "application/vnd.oci.image.manifest.v1+json");
	CHECK_JINT(t, "size", 344);
	CHECK_JSTR(t, "actor", "alice");
	CHECK_JSTR(t, "timestamp", "2026-11-22T18:20:32.255357Z");
	/* No registry_url configured: the host the registry was addressed as. */
	CHECK_JSTR(t, "registry_url", "http://127.0.0.1:5000");
	CHECK_JSTR(t, "event_id", PUSH_ID);
	UNIT_CHECK(!strstr(body.data, "SECRET-TOKEN"), "the callback token is in the body");
	yajl_tree_free(t);
	payload_headers_free(&h);
	buf_free(&body);
	sample_free(&s);
}

UNIT_TEST(source_from_registry_url)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	s.ev.registry_url = "https://registry.example.com/";
	struct payload_headers h = {0};
	struct buf body = BUF_INIT;
	UNIT_CHECK(cloudevents_binary(&s.ev, &h, &body), "refused");
	UNIT_CHECK_STR(payload_headers_get(&h, "CE-Source"),
		       "https://registry.example.com/team-a/app");
	yajl_val t = JSON_PARSE(body.data, body.len);
	CHECK_JSTR(t, "registry_url", "https://registry.example.com");
	yajl_tree_free(t);
	payload_headers_free(&h);
	buf_free(&body);

	/* A source name that is no URI path as it stands is percent-encoded. */
	s.ev.registry_url = "";
	s.ev.source_name = "eu west:1/ä";
	UNIT_CHECK(cloudevents_binary(&s.ev, &h, &body), "refused");
	/* Encoded twice: once as a URI reference, once more as a header value. */
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-source"), "eu%2520west%253A1%252F%25C3%25A4");
	payload_headers_free(&h);
	buf_free(&body);
	sample_free(&s);
}

UNIT_TEST(delete_by_digest_and_by_tag)
{
	struct sample s;
	UNIT_CHECK(sample_load("10-delete-digest.json", &s), "sample not loaded");
	struct payload_headers h = {0};
	struct buf body = BUF_INIT;
	UNIT_CHECK(cloudevents_binary(&s.ev, &h, &body), "refused");
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-type"), "io.reghook.image.deleted");
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-subject"), "team-a/app@" DIGEST);
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-id"), "f5884af7-4dd3-40a8-b54d-cd8f6db2f06a");
	yajl_val t = JSON_PARSE(body.data, body.len);
	CHECK_JSTR(t, "action", "delete");
	CHECK_JNULL(t, "tag");
	CHECK_JNULL(t, "media_type");
	CHECK_JNULL(t, "size");
	yajl_tree_free(t);
	payload_headers_free(&h);
	buf_free(&body);
	sample_free(&s);

	/* A tag delete carries the digest found through its request id. */
	UNIT_CHECK(sample_load("11-delete-tag.json", &s), "sample not loaded");
	s.ev.digest = DIGEST;
	UNIT_CHECK(cloudevents_binary(&s.ev, &h, &body), "refused");
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-subject"), "team-a/app:latest");
	t = JSON_PARSE(body.data, body.len);
	CHECK_JSTR(t, "tag", "latest");
	CHECK_JSTR(t, "digest", DIGEST);
	yajl_tree_free(t);
	payload_headers_free(&h);
	buf_free(&body);
	sample_free(&s);
}

UNIT_TEST(structured_mode)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	struct buf body = BUF_INIT, data = BUF_INIT;
	struct payload_headers h = {0};
	UNIT_CHECK(cloudevents_structured(&s.ev, &body), "refused");
	UNIT_CHECK(cloudevents_binary(&s.ev, &h, &data), "refused");
	yajl_val t = JSON_PARSE(body.data, body.len);
	CHECK_JKEYS(t, "", "specversion", "id", "source", "type", "subject", "time", "actor",
		    "datacontenttype", "data");
	CHECK_JSTR(t, "specversion", "1.0");
	CHECK_JSTR(t, "id", PUSH_ID);
	CHECK_JSTR(t, "source", "main");
	CHECK_JSTR(t, "type", "io.reghook.image.pushed");
	CHECK_JSTR(t, "subject", "team-a/app:1.0");
	CHECK_JSTR(t, "time", "2026-11-22T18:20:32.255357Z");
	CHECK_JSTR(t, "actor", "alice");
	CHECK_JSTR(t, "datacontenttype", "application/json");
	check_event_object(t, "data");
	/* The data is byte for byte the body of binary mode. */
	size_t n = data.len;
	UNIT_CHECK(body.len > n + 9 && memcmp(body.data + body.len - n - 1, data.data, n) == 0 &&
			   memcmp(body.data + body.len - n - 8, "\"data\":", 7) == 0,
		   "data is not the binary body: %s", body.data);
	yajl_tree_free(t);
	payload_headers_free(&h);
	buf_free(&body);
	buf_free(&data);
	sample_free(&s);
}

UNIT_TEST(header_encoding)
{
	static const char *const cases[][2] = {
		/* The binding's own example. */
		{"Euro \xe2\x82\xac \xf0\x9f\x98\x80", "Euro%20%E2%82%AC%20%F0%9F%98%80"},
		{"say \"hi\" 100%", "say%20%22hi%22%20100%25"},
		{"tab\there\x7f", "tab%09here%7F"},
		{"a:b/c@d?e=f&g+h~!", "a:b/c@d?e=f&g+h~!"},
		{"", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf out = BUF_INIT;
		cloudevents_header_encode(cases[i][0], &out);
		UNIT_CHECK_STR(buf_cstr(&out), cases[i][1]);
		buf_free(&out);
	}
	/* Every header value is printable ASCII, whatever the actor's name. */
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	s.ev.actor = "Zo\xc3\xab \"\xe7\x8c\xab\" \r\n100%";
	struct payload_headers h = {0};
	struct buf body = BUF_INIT;
	UNIT_CHECK(cloudevents_binary(&s.ev, &h, &body), "refused");
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-actor"),
		       "Zo%C3%AB%20%22%E7%8C%AB%22%20%0D%0A100%25");
	for (size_t i = 0; i < h.n; i++)
		for (const char *p = h.h[i].value; *p; p++)
			UNIT_CHECK(*p > 0x20 && *p < 0x7f, "%s holds byte 0x%02x", h.h[i].name,
				   (unsigned char)*p);
	payload_headers_free(&h);
	buf_free(&body);
	sample_free(&s);
}

UNIT_TEST(unknown_actor_and_test_event)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	s.ev.actor = "";
	/* A test event: no registry event, so no id of its own and no source. */
	s.ev.event_id = NULL;
	s.ev.source_name = NULL;
	s.ev.timestamp = NULL;
	s.ev.occurred_at = 0;
	struct payload_headers h = {0};
	struct buf body = BUF_INIT;
	UNIT_CHECK(cloudevents_binary(&s.ev, &h, &body), "refused");
	UNIT_CHECK(h.n == 6 && !payload_headers_get(&h, "ce-actor"), "ce-actor sent");
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-id"), s.ev.delivery_id);
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-source"), "reghook");
	UNIT_CHECK_STR(payload_headers_get(&h, "ce-time"), "1970-01-01T00:00:00Z");
	yajl_val t = JSON_PARSE(body.data, body.len);
	CHECK_JNULL(t, "actor");
	CHECK_JNULL(t, "event_id");
	yajl_tree_free(t);
	buf_reset(&body);
	UNIT_CHECK(cloudevents_structured(&s.ev, &body), "refused");
	t = JSON_PARSE(body.data, body.len);
	CHECK_JABSENT(t, "actor");
	CHECK_JNULL(t, "data.actor");
	yajl_tree_free(t);
	payload_headers_free(&h);
	buf_free(&body);
	sample_free(&s);
}

UNIT_TEST(refusals)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	struct payload_event bad[4] = {s.ev, s.ev, s.ev, s.ev};
	bad[0].action = "pull";
	bad[1].actor = "bad \xc0\xaf utf-8";
	bad[2].event_id = NULL;
	bad[2].delivery_id = NULL;
	bad[3].tag = "\xff";
	for (size_t i = 0; i < 4; i++) {
		struct payload_headers h = {0};
		struct buf body = BUF_INIT;
		buf_puts(&body, "kept");
		UNIT_CHECK(!cloudevents_binary(&bad[i], &h, &body), "case %zu: accepted", i);
		UNIT_CHECK(!cloudevents_structured(&bad[i], &body), "case %zu: accepted", i);
		UNIT_CHECK(h.n == 0, "case %zu: headers added", i);
		UNIT_CHECK_STR(buf_cstr(&body), "kept");
		buf_free(&body);
	}
	sample_free(&s);
}

int main(void)
{
	UNIT_RUN(binary_push_of_a_real_event);
	UNIT_RUN(source_from_registry_url);
	UNIT_RUN(delete_by_digest_and_by_tag);
	UNIT_RUN(structured_mode);
	UNIT_RUN(header_encoding);
	UNIT_RUN(unknown_actor_and_test_event);
	UNIT_RUN(refusals);
	return UNIT_DONE();
}
