/*
 * Unit tests of dispatcher/envelope.c: the recorded docker-registry 2.8.2
 * envelopes give the right normalised events, distribution 3.x shapes and
 * timestamp variants are understood, and malformed envelopes give errors
 * that name the problem.
 */
#include "envelope.h"
#include "unit.h"

#include <stdlib.h>

static char *read_sample(const char *name, size_t *len)
{
	/* The checkout's own copy; tests/run runs unit tests from the checkout's root. */
	char path[1024];
	snprintf(path, sizeof(path), "tests/fixtures/samples/%s", name);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *data = malloc(1 << 20);
	*len = fread(data, 1, (1 << 20) - 1, f);
	data[*len] = '\0';
	fclose(f);
	return data;
}

struct expect {
	const char *file;
	enum event_kind kind;
	const char *tag;
	const char *digest_prefix;
};

UNIT_TEST(samples_classify)
{
	static const struct expect cases[] = {
		{"01-push-blob.json", EVENT_IGNORED, NULL, "sha256:47a2"},
		{"02-push-blob.json", EVENT_IGNORED, NULL, "sha256:"},
		{"03-push-manifest-tag.json", EVENT_IMAGE_PUSH, "1.0", "sha256:33d3"},
		{"04-pull-manifest-tag.json", EVENT_IGNORED, "1.0", "sha256:33d3"},
		{"05-pull-blob.json", EVENT_IGNORED, NULL, "sha256:"},
		{"08-push-manifest-tag.json", EVENT_IMAGE_PUSH, "latest", "sha256:33d3"},
		{"10-delete-digest.json", EVENT_DELETE, NULL, "sha256:33d3"},
		{"11-delete-tag.json", EVENT_DELETE, "latest", NULL},
		{"12-delete-tag.json", EVENT_DELETE, "1.0", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len;
		char err[256];
		struct envelope env;
		char *data = read_sample(cases[i].file, &len);
		UNIT_CHECK(data != NULL, "cannot read tests/fixtures/samples/%s", cases[i].file);
		if (!data)
			continue;
		enum envelope_status st = envelope_parse(data, len, 10, &env, err, sizeof(err));
		UNIT_CHECK(st == ENVELOPE_OK, "%s: %s", cases[i].file, err);
		if (st == ENVELOPE_OK) {
			const struct reg_event *ev = &env.events[0];
			UNIT_CHECK(env.count == 1, "%s: %zu events", cases[i].file, env.count);
			UNIT_CHECK(ev->kind == cases[i].kind, "%s: kind %d", cases[i].file,
				   ev->kind);
			UNIT_CHECK(unit_streq(ev->tag, cases[i].tag), "%s: tag %s", cases[i].file,
				   ev->tag ? ev->tag : "(null)");
			UNIT_CHECK(
				cases[i].digest_prefix
					? ev->digest && strncmp(ev->digest, cases[i].digest_prefix,
								strlen(cases[i].digest_prefix)) == 0
					: ev->digest == NULL,
				"%s: digest %s", cases[i].file, ev->digest ? ev->digest : "(null)");
			UNIT_CHECK(unit_streq(ev->repository, "team-a/app"), "%s: repository",
				   cases[i].file);
			UNIT_CHECK(unit_streq(ev->actor, "alice"), "%s: actor", cases[i].file);
			if (ev->kind != EVENT_IGNORED) {
				UNIT_CHECK(ev->raw && strstr(ev->raw, ev->id), "%s: raw",
					   cases[i].file);
				UNIT_CHECK(ev->request_id != NULL, "%s: request id", cases[i].file);
			}
			envelope_free(&env);
		}
		free(data);
	}
}

UNIT_TEST(delete_events_share_request_id)
{
	const char *files[] = {"10-delete-digest.json", "11-delete-tag.json", "12-delete-tag.json"};
	char first[128] = "";
	for (int i = 0; i < 3; i++) {
		size_t len;
		char err[256];
		struct envelope env;
		char *data = read_sample(files[i], &len);
		if (!data || envelope_parse(data, len, 10, &env, err, sizeof(err)) != ENVELOPE_OK) {
			UNIT_CHECK(0, "%s did not parse", files[i]);
			free(data);
			continue;
		}
		UNIT_CHECK(env.count == 1, "%s: %zu events, want 1", files[i], env.count);
		if (env.count >= 1) {
			if (i == 0)
				snprintf(first, sizeof(first), "%s", env.events[0].request_id);
			UNIT_CHECK(unit_streq(first, env.events[0].request_id),
				   "%s: request id differs", files[i]);
		}
		envelope_free(&env);
		free(data);
	}
}

UNIT_TEST(classify_rules)
{
	UNIT_CHECK(envelope_classify("push", "application/octet-stream", "http://r/v2/a/blobs/x",
				     NULL) == EVENT_IGNORED,
		   "blob push");
	UNIT_CHECK(envelope_classify("push", "application/vnd.oci.image.index.v1+json", NULL,
				     NULL) == EVENT_MANIFEST_PUSH,
		   "untagged index");
	UNIT_CHECK(envelope_classify("push", "application/vnd.example.future+json",
				     "http://r/v2/a/manifests/sha256:1",
				     NULL) == EVENT_MANIFEST_PUSH,
		   "unknown manifest type by URL");
	UNIT_CHECK(envelope_classify("push", "", NULL, "v1") == EVENT_IMAGE_PUSH, "tagged");
	UNIT_CHECK(envelope_classify("pull", "x", NULL, "v1") == EVENT_IGNORED, "pull");
	UNIT_CHECK(envelope_classify("mount", "x", NULL, NULL) == EVENT_IGNORED, "mount");
	UNIT_CHECK(envelope_classify("delete", "", NULL, NULL) == EVENT_DELETE, "delete");
	UNIT_CHECK(envelope_classify(NULL, NULL, NULL, NULL) == EVENT_IGNORED, "no action");
}

UNIT_TEST(timestamps)
{
	static const struct {
		const char *in, *out;
	} ok[] = {
		{"2026-11-22T18:20:32.255357202Z", "2026-11-22T18:20:32.255357Z"},
		{"2026-11-22T18:20:32.3978632Z", "2026-11-22T18:20:32.397863Z"},
		{"2026-11-22T18:20:32Z", "2026-11-22T18:20:32Z"},
		{"2026-11-22T18:20:32.5+02:00", "2026-11-22T18:20:32.5+02:00"},
		{"2026-11-22t18:20:32.123456789-05:30", "2026-11-22T18:20:32.123456-05:30"},
	};
	static const char *const bad[] = {
		"",
		"yesterday",
		"2026-11-22",
		"2026-11-22T18:20:32",
		"2026-13-22T18:20:32Z",
		"2026-11-22T18:20:32.Z",
		"2026-11-22T18:20:32.1234567890Z",
		"2026-11-22T18:20:32+2",
		"2026-11-22T18:20:32Zjunk",
		"2026-11-22T25:20:32Z",
		/* Second 60: a registry never sends it; consumers refuse it. */
		"2026-11-22T18:20:60.123456789+05:30",
		"2016-12-31T23:59:60Z",
	};
	char out[64];
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		bool parsed = envelope_timestamp(ok[i].in, out, sizeof(out));
		UNIT_CHECK(parsed && strcmp(out, ok[i].out) == 0, "%s gave %s", ok[i].in,
			   parsed ? out : "(error)");
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		UNIT_CHECK(!envelope_timestamp(bad[i], out, sizeof(out)), "'%s' accepted", bad[i]);
}

UNIT_TEST(v2_delete_shape)
{
	const char *body = "{\"events\":[{\"id\":\"e1\",\"timestamp\":\"2026-01-01T00:00:00Z\","
			   "\"action\":\"delete\",\"target\":{\"mediaType\":\"\",\"digest\":\"\","
			   "\"size\":0,\"repository\":\"team-a/app\",\"tag\":\"v1\"},"
			   "\"request\":{\"id\":\"r1\"}}]}";
	struct envelope env;
	char err[256];
	enum envelope_status st = envelope_parse(body, strlen(body), 10, &env, err, sizeof(err));
	UNIT_CHECK(st == ENVELOPE_OK, "%s", err);
	if (st != ENVELOPE_OK)
		return;
	UNIT_CHECK(env.count == 1, "%zu events, want 1", env.count);
	if (env.count >= 1) {
		UNIT_CHECK(env.events[0].kind == EVENT_DELETE, "kind");
		UNIT_CHECK(env.events[0].digest == NULL, "empty digest is absent");
		UNIT_CHECK(unit_streq(env.events[0].tag, "v1"), "tag");
		UNIT_CHECK(env.events[0].actor == NULL, "no actor");
	}
	envelope_free(&env);
}

UNIT_TEST(malformed_envelopes)
{
	static const struct {
		const char *body;
		enum envelope_status status;
		const char *fragment;
	} cases[] = {
		{"", ENVELOPE_BAD, "empty body"},
		{"{", ENVELOPE_BAD, "not JSON"},
		{"null", ENVELOPE_BAD, "not an envelope"},
		{"{\"events\":\"x\"}", ENVELOPE_BAD, "events: not an array"},
		{"{\"events\":[[]]}", ENVELOPE_BAD, "events[0]: not an object"},
		{"{\"events\":[{\"action\":\"pull\"},{}]}", ENVELOPE_BAD,
		 "events[1].action: missing"},
		{"{\"events\":[{\"action\":\"push\",\"target\":{\"repository\":1}}]}", ENVELOPE_BAD,
		 "events[0].target.repository: not a string"},
		{"{\"events\":[{\"action\":\"push\",\"id\":\"1\",\"timestamp\":\"2026-01-01T00:00:"
		 "00Z\","
		 "\"target\":{\"tag\":\"t\",\"digest\":\"d\"}}]}",
		 ENVELOPE_BAD, "target.repository: missing"},
		{"{\"events\":[{\"action\":\"push\"},{\"action\":\"push\"},{\"action\":\"push\"}]}",
		 ENVELOPE_TOO_MANY, "more than 2 events"},
		{"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
		 ENVELOPE_BAD, "nested deeper"},
		{"{\"events\":[\"\xc3\x28\"]}", ENVELOPE_BAD, "not JSON"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct envelope env;
		char err[256] = "";
		enum envelope_status st = envelope_parse(cases[i].body, strlen(cases[i].body), 2,
							 &env, err, sizeof(err));
		UNIT_CHECK(st == cases[i].status, "case %zu: status %d (%s)", i, st, err);
		UNIT_CHECK(strstr(err, cases[i].fragment) != NULL,
			   "case %zu: error '%s' lacks '%s'", i, err, cases[i].fragment);
		UNIT_CHECK(env.events == NULL && env.tree == NULL, "case %zu: not freed", i);
	}
	/* A NUL inside the body. */
	struct envelope env;
	char err[256];
	UNIT_CHECK(envelope_parse("{\"events\":[]}\0x", 15, 2, &env, err, sizeof(err)) ==
			   ENVELOPE_BAD,
		   "NUL accepted");
}

/*
 * Repository names a registry cannot give: over 255 bytes, or with an empty
 * path component. Each costs the database its prefixes (the square of its
 * length), so they are refused; 255 bytes of single-letter components pass.
 */
UNIT_TEST(repository_names)
{
	char longest[256], over[257], slashes[1025];
	for (size_t i = 0; i < 255; i++)
		longest[i] = i % 2 ? '/' : 'a';
	longest[255] = '\0';
	memset(over, 'a', 256);
	over[256] = '\0';
	memset(slashes, '/', 1024);
	slashes[1024] = '\0';
	static const char *const fmt =
		"{\"events\":[{\"action\":\"push\",\"id\":\"1\",\"timestamp\":"
		"\"2026-01-01T00:00:00Z\",\"target\":{\"repository\":\"%s\",\"tag\":\"t\","
		"\"digest\":\"sha256:1\"}}]}";
	const struct {
		const char *repo;
		const char *fragment; /* of the error; NULL: accepted */
	} cases[] = {
		{longest, NULL},
		{"team-a/app", NULL},
		{"app", NULL},
		{over, "events[0].target.repository: longer than 255 bytes"},
		{slashes, "longer than 255 bytes"},
		{"/team-a/app",
		 "events[0].target.repository: an empty path component in '/team-a/app'"},
		{"team-a/app/", "an empty path component"},
		{"team-a//app", "an empty path component"},
		{"/", "an empty path component"},
		{"team-a/../admin", "a path component '.' or '..' in 'team-a/../admin'"},
		{"team-a/.", "a path component '.' or '..'"},
		{"..", "a path component '.' or '..'"},
		{"team-a/..app/x.", NULL},
		/* A registry's names: a host first perhaps, then [a-z0-9._-] components. */
		{"Registry.example:5000/team-a/app", NULL},
		{"[::1]:5000/app", NULL},
		{"team-a/a b", "events[0].target.repository: byte 0x20 at 8 is not in a registry's "
			       "repository names"},
		{"team-a/\\u202eppa", "byte 0xe2 at 7 is not in a registry's repository names"},
		{"team-a/x\\ny", "byte 0x0a at 8"},
		{"team-a/caf\\u00e9", "byte 0xc3 at 10"},
		{"team-a/a%2fb", "byte 0x25 at 8"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char body[2048];
		snprintf(body, sizeof(body), fmt, cases[i].repo);
		struct envelope env;
		char err[256] = "";
		enum envelope_status st =
			envelope_parse(body, strlen(body), 10, &env, err, sizeof(err));
		if (cases[i].fragment)
			UNIT_CHECK(st == ENVELOPE_BAD && strstr(err, cases[i].fragment),
				   "case %zu: status %d, error '%s'", i, st, err);
		else
			UNIT_CHECK(st == ENVELOPE_OK &&
					   unit_streq(env.events[0].repository, cases[i].repo),
				   "case %zu: %s", i, err);
		envelope_free(&env);
	}
}

/*
 * What a registry sends for a request whose Host header was long (its
 * push or pull succeeded): target.url of any length, for a push kept
 * and for a pull ignored, never a 400 the registry would send again and
 * again. A long pusher's name is cut where it is shown, whole in raw.
 */
UNIT_TEST(long_fields_a_registry_sends)
{
	static const char *const fmt =
		"{\"events\":[{\"action\":\"%s\",\"id\":\"1\",\"timestamp\":"
		"\"2026-01-01T00:00:00Z\",\"target\":{\"mediaType\":\"application/"
		"vnd.oci.image.manifest.v1+json\",\"repository\":\"team-a/app\",\"tag\":\"t\","
		"\"digest\":\"sha256:1\",\"url\":\"http://%s/v2/team-a/app/manifests/sha256:1\"},"
		"\"actor\":{\"name\":\"%s\"}}]}";
	char host[3001], actor[1200 * 2 + 1];
	memset(host, 'h', 3000);
	host[3000] = '\0';
	/* 1,200 two-byte characters: the cut falls inside one at byte 1,024. */
	for (int i = 0; i < 1200; i++)
		memcpy(actor + 2 * i, "\xc3\xa9", 2);
	actor[2400] = '\0';
	static const char *const actions[] = {"push", "pull"};
	for (size_t i = 0; i < 2; i++) {
		size_t cap = strlen(fmt) + sizeof(host) + sizeof(actor) + 16;
		char *body = malloc(cap);
		snprintf(body, cap, fmt, actions[i], host, actor);
		struct envelope env;
		char err[256] = "";
		enum envelope_status st =
			envelope_parse(body, strlen(body), 10, &env, err, sizeof(err));
		UNIT_CHECK(st == ENVELOPE_OK, "%s: status %d, error '%s'", actions[i], st, err);
		if (st == ENVELOPE_OK && i == 0) {
			const struct reg_event *ev = &env.events[0];
			UNIT_CHECK(ev->kind == EVENT_IMAGE_PUSH, "a push with a long url: kind %d",
				   ev->kind);
			UNIT_CHECK(ev->actor && strlen(ev->actor) == 1024 &&
					   strncmp(ev->actor, actor, 1024) == 0,
				   "the actor cut at 1,024 bytes, between characters: %zu",
				   ev->actor ? strlen(ev->actor) : 0);
			UNIT_CHECK(ev->raw && strstr(ev->raw, actor) && strstr(ev->raw, host),
				   "raw keeps the event whole");
		}
		if (st == ENVELOPE_OK && i == 1)
			UNIT_CHECK(env.events[0].kind == EVENT_IGNORED, "a pull: kind %d",
				   env.events[0].kind);
		envelope_free(&env);
		free(body);
	}
}

/* What yajl would let through but change, or PostgreSQL refuse: 400 before parsing. */
/* A tag or a digest is never a path of its own: no '/', no '\\', not "." or "..". */
UNIT_TEST(tag_names)
{
	static const char *const fmt =
		"{\"events\":[{\"action\":\"push\",\"id\":\"1\",\"timestamp\":"
		"\"2026-01-01T00:00:00Z\",\"target\":{\"repository\":\"team-a/app\",\"tag\":\"%s\","
		"\"digest\":\"%s\"}}]}";
	const struct {
		const char *value;
		bool ok[2]; /* as a tag, as a digest */
	} cases[] = {
		{"v1.2.3", {true, true}},
		{"latest", {true, true}},
		{"a..b", {true, true}},
		{"_x-1.0", {true, true}},
		/* A registry's tag starts with [A-Za-z0-9_], holds [A-Za-z0-9_.-]. */
		{"...", {false, true}},
		{"-x", {false, true}},
		{"v1+b", {false, true}},
		{"v1:b", {false, true}},
		{"v1 b", {false, false}},
		{"v1\\u200b", {false, false}},	/* zero-width space */
		{"\\u202eppa", {false, false}}, /* right-to-left override */
		{"v\\u00e9", {false, false}},
		{"..", {false, false}},
		{".", {false, false}},
		{"../run", {false, false}},
		{"x/y", {false, false}},
		{"a\\\\b", {false, false}},
	};
	for (int field = 0; field < 2; field++) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			char body[1024];
			snprintf(body, sizeof(body), fmt, field ? "t" : cases[i].value,
				 field ? cases[i].value : "sha256:1");
			struct envelope env;
			char err[256] = "";
			enum envelope_status st =
				envelope_parse(body, strlen(body), 10, &env, err, sizeof(err));
			if (cases[i].ok[field])
				UNIT_CHECK(st == ENVELOPE_OK, "'%s': %s", cases[i].value, err);
			else
				UNIT_CHECK(st == ENVELOPE_BAD &&
						   strstr(err, field ? "events[0].target.digest: "
								     : "events[0].target.tag: "),
					   "'%s': status %d, error '%s'", cases[i].value, st, err);
			envelope_free(&env);
		}
	}
}

UNIT_TEST(strict_strings)
{
	static const struct {
		const char *body;
		const char *fragment; /* of the error; NULL: accepted */
	} cases[] = {
		{"{\"events\":[],\"x\":\"\xc0\xaf\"}", "invalid UTF-8 at byte 18"}, /* overlong */
		{"{\"events\":[],\"x\":\"\xed\xa0\x80\"}", "invalid UTF-8"},	    /* surrogate */
		{"{\"events\":[],\"x\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8"},    /* > U+10FFFF */
		{"{\"events\":[],\"x\":\"\xe2\x82\"}", "invalid UTF-8"},	    /* truncated */
		{"{\"events\":[],\"x\":\"\x80\"}", "invalid UTF-8"}, /* continuation */
		{"{\"events\":[],\"x\":\"a\\u0000b\"}", "\\u0000 at byte 19"},
		{"{\"events\":[],\"x\":\"\\ud800\"}", "unpaired UTF-16 surrogate \\ud800"},
		{"{\"events\":[],\"x\":\"\\udc00\\ud800\"}", "unpaired"},
		{"{\"events\":[],\"x\":\"\\ud800\\u0041\"}", "unpaired"},
		{"{\"events\":[],\"x\":\"\\ud83d", "not JSON"}, /* cut short */
		/* Well-formed: accepted. */
		{"{\"events\":[],\"x\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xb3\"}", NULL},
		{"{\"events\":[],\"x\":\"\\ud83d\\udc33 \\u00e9 \\\\u0000\"}", NULL},
		{"{\"events\":[],\"x\":\"[[[[\\\"{{{{\"}", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct envelope env;
		char err[256] = "";
		enum envelope_status st = envelope_parse(cases[i].body, strlen(cases[i].body), 10,
							 &env, err, sizeof(err));
		if (cases[i].fragment)
			UNIT_CHECK(st == ENVELOPE_BAD && strstr(err, cases[i].fragment),
				   "case %zu: status %d, error '%s'", i, st, err);
		else
			UNIT_CHECK(st == ENVELOPE_OK, "case %zu: %s", i, err);
		envelope_free(&env);
	}
}

/* Too many events are refused before the tree is built, whatever the rest holds. */
UNIT_TEST(too_many_events_early)
{
	struct buf b = BUF_INIT;
	buf_puts(&b, "{\"events\":[");
	for (int i = 0; i < 5000; i++)
		buf_puts(&b, i ? ",{}" : "{}");
	buf_puts(&b, "], \"x\": [[1,2,3]]}");
	struct envelope env;
	char err[256] = "";
	UNIT_CHECK(envelope_parse(b.data, b.len, 4999, &env, err, sizeof(err)) == ENVELOPE_TOO_MANY,
		   "%s", err);
	UNIT_CHECK(strcmp(err,
			  "more than 4999 events in one envelope; at most 4999 are accepted") == 0,
		   "%s", err);
	/* Exactly the limit passes; arrays nested deeper do not count. */
	UNIT_CHECK(envelope_parse(b.data, b.len, 5000, &env, err, sizeof(err)) == ENVELOPE_BAD,
		   "%s", err);
	UNIT_CHECK(strstr(err, "events[0].action: missing") != NULL, "%s", err);
	const char *small = "{\"x\":[[1,2,3,4,5]],\"events\":[{\"action\":\"pull\"}]}";
	UNIT_CHECK(envelope_parse(small, strlen(small), 1, &env, err, sizeof(err)) == ENVELOPE_OK,
		   "%s", err);
	envelope_free(&env);
	buf_free(&b);
}

UNIT_TEST(batch_json)
{
	const char *body =
		"{\"events\":[{\"id\":\"e\\\"1\",\"timestamp\":\"2026-01-01T00:00:00Z\","
		"\"action\":\"push\",\"target\":{\"mediaType\":\"application/vnd.oci.image."
		"manifest.v1+json\",\"digest\":\"sha256:1\",\"repository\":\"team-a/app\","
		"\"tag\":\"v1\",\"size\":12.5e3}}]}";
	struct envelope env;
	char err[256];
	struct buf b = BUF_INIT;
	UNIT_CHECK(envelope_parse(body, strlen(body), 10, &env, err, sizeof(err)) == ENVELOPE_OK,
		   "%s", err);
	UNIT_CHECK(env.count == 1, "%zu events, want 1", env.count);
	envelope_event_json(&b, &env.events[0], 7, 42);
	UNIT_CHECK(strstr(b.data, "\"i\":7,\"s\":42") != NULL, "%s", b.data);
	UNIT_CHECK(strstr(b.data, "\"id\":\"e\\\"1\"") != NULL, "escaped id: %s", b.data);
	UNIT_CHECK(strstr(b.data, "\"actor\":null") != NULL, "null actor: %s", b.data);
	UNIT_CHECK(strstr(b.data, "12.5e3") != NULL, "number kept as written: %s", b.data);
	buf_free(&b);
	envelope_free(&env);
}

/*
 * What the old pre-scan missed: it did not know comments, so a quote in
 * one hid every check after it, while yajl_tree_parse read on. JSON has
 * no comments; these bodies are refused whatever follows.
 */
UNIT_TEST(no_comments_no_duplicates)
{
	static const char event[] =
		"{\"id\":\"1\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"action\":\"push\","
		"\"target\":{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		"\"digest\":\"sha256:1\",\"repository\":\"team-a/app\",\"tag\":\"v1%s\"%s}}";
	char body[4096];
	struct envelope env;
	char err[256] = "";

	/* The tag's \u0000 behind a comment holding a quote: once stored as "v1". */
	char with_nul[1024];
	snprintf(with_nul, sizeof(with_nul), event, "\\u0000", "");
	snprintf(body, sizeof(body), "/*\"*/{\"events\":[%s]}", with_nul);
	UNIT_CHECK(envelope_parse(body, strlen(body), 10, &env, err, sizeof(err)) == ENVELOPE_BAD,
		   "comment + \\u0000 accepted");
	envelope_free(&env);
	snprintf(body, sizeof(body), "{\"events\":[%s]} // \"", with_nul);
	UNIT_CHECK(envelope_parse(body, strlen(body), 10, &env, err, sizeof(err)) == ENVELOPE_BAD,
		   "\\u0000 + line comment accepted");
	envelope_free(&env);

	/* The same event, well-formed, is accepted; with a comment it is not. */
	char plain[1024];
	snprintf(plain, sizeof(plain), event, "", "");
	snprintf(body, sizeof(body), "{\"events\":[%s]}", plain);
	UNIT_CHECK(envelope_parse(body, strlen(body), 10, &env, err, sizeof(err)) == ENVELOPE_OK,
		   "%s", err);
	UNIT_CHECK(env.count == 1 && unit_streq(env.events[0].tag, "v1"), "count %zu", env.count);
	envelope_free(&env);
	snprintf(body, sizeof(body), "{\"events\":[%s /* note */]}", plain);
	UNIT_CHECK(envelope_parse(body, strlen(body), 10, &env, err, sizeof(err)) == ENVELOPE_BAD &&
			   strstr(err, "body is not JSON"),
		   "a comment accepted: %s", err);
	envelope_free(&env);

	/* Two repositories in one target: routed by one, stored with the other. */
	char twice[1024];
	snprintf(twice, sizeof(twice), event, "", ",\"repository\":\"team-b/y\"");
	snprintf(body, sizeof(body), "{\"events\":[%s]}", twice);
	UNIT_CHECK(envelope_parse(body, strlen(body), 10, &env, err, sizeof(err)) == ENVELOPE_BAD &&
			   strstr(err, "duplicate key \"repository\""),
		   "duplicate key: %s", err);
	envelope_free(&env);

	/* Too many events behind a comment: refused as not JSON, before any tree. */
	snprintf(body, sizeof(body), "{\"events\":[/*\"*/%s,%s,%s]}", plain, plain, plain);
	UNIT_CHECK(envelope_parse(body, strlen(body), 2, &env, err, sizeof(err)) == ENVELOPE_BAD,
		   "%s", err);
	envelope_free(&env);
}

int main(void)
{
	UNIT_RUN(samples_classify);
	UNIT_RUN(delete_events_share_request_id);
	UNIT_RUN(classify_rules);
	UNIT_RUN(timestamps);
	UNIT_RUN(v2_delete_shape);
	UNIT_RUN(malformed_envelopes);
	UNIT_RUN(repository_names);
	UNIT_RUN(tag_names);
	UNIT_RUN(long_fields_a_registry_sends);
	UNIT_RUN(strict_strings);
	UNIT_RUN(too_many_events_early);
	UNIT_RUN(batch_json);
	UNIT_RUN(no_comments_no_duplicates);
	return UNIT_DONE();
}
