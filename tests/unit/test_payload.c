/*
 * Unit tests for dispatcher/payload.c. Each payload is parsed back with
 * yajl_tree and every field checked for value and JSON type, and the key
 * order compared with the SPEC's; strings that need escaping must come
 * back byte for byte.
 */
#include "payload.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

static const char *const top_keys_push[] = {"action", "callback_url", "push_data", "repository",
					    NULL};
static const char *const top_keys_delete[] = {"action", "callback_url", "delete_data", "repository",
					      NULL};
static const char *const push_keys[] = {"images", "pushed_at", "pusher", "tag", NULL};
static const char *const delete_keys[] = {"deleted_at", "deleter", "tag", "digest", NULL};
static const char *const repo_keys[] = {"comment_count",
					"date_created",
					"description",
					"dockerfile",
					"full_description",
					"is_official",
					"is_private",
					"is_trusted",
					"name",
					"namespace",
					"owner",
					"repo_name",
					"repo_url",
					"star_count",
					"status",
					NULL};

static struct payload_event push_event(void)
{
	return (struct payload_event){
		.action = "push",
		.namespace_ = "team-a",
		.name = "app",
		.repository = "team-a/app",
		.tag = "latest",
		.digest = "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270",
		.actor = "alice",
		.occurred_at = 1417566161,
		.description = "Team A's images",
		.is_private = true,
		.namespace_created_at = 1417494799,
		.callback_url = "https://reghook.example.com/callback/tok123",
		.registry_url = "https://registry.example.com",
	};
}

/* Generates ev and parses it back; NULL (with a failure recorded) if either step fails. */
static yajl_val generate(const struct payload_event *ev)
{
	struct buf out = BUF_INIT;
	char err[256];
	if (!payload_dockerhub(ev, &out)) {
		UNIT_CHECK(false, "payload_dockerhub failed");
		return NULL;
	}
	yajl_val tree = yajl_tree_parse(buf_cstr(&out), err, sizeof(err));
	UNIT_CHECK(tree, "output is not JSON (%s): %s", err, buf_cstr(&out));
	buf_free(&out);
	return tree;
}

static yajl_val at(yajl_val tree, const char *a, const char *b)
{
	const char *path[] = {a, b, NULL};
	return yajl_tree_get(tree, path, yajl_t_any);
}

#define CHECK_STR(tree, a, b, want)                                                                \
	do {                                                                                       \
		yajl_val v_ = at(tree, a, b);                                                      \
		UNIT_CHECK(v_ != NULL && YAJL_IS_STRING(v_), "%s.%s: not a string", a,             \
			   b ? b : "");                                                            \
		if (v_ && YAJL_IS_STRING(v_))                                                      \
			UNIT_CHECK_STR(YAJL_GET_STRING(v_), want);                                 \
	} while (0)

#define CHECK_INT(tree, a, b, want)                                                                \
	do {                                                                                       \
		yajl_val v_ = at(tree, a, b);                                                      \
		UNIT_CHECK(v_ != NULL && YAJL_IS_INTEGER(v_), "%s.%s: not an integer", a,          \
			   b ? b : "");                                                            \
		if (v_ && YAJL_IS_INTEGER(v_))                                                     \
			UNIT_CHECK(YAJL_GET_INTEGER(v_) == (want), "%s.%s is %lld, want %lld", a,  \
				   b ? b : "", YAJL_GET_INTEGER(v_), (long long)(want));           \
	} while (0)

#define CHECK_BOOL(tree, a, b, want)                                                               \
	do {                                                                                       \
		yajl_val v_ = at(tree, a, b);                                                      \
		UNIT_CHECK(v_ && (YAJL_IS_TRUE(v_) || YAJL_IS_FALSE(v_)), "%s.%s: not a boolean",  \
			   a, b ? b : "");                                                         \
		if (v_)                                                                            \
			UNIT_CHECK(YAJL_IS_TRUE(v_) == (want), "%s.%s is not %s", a, b ? b : "",   \
				   (want) ? "true" : "false");                                     \
	} while (0)

#define CHECK_NULL(tree, a, b)                                                                     \
	do {                                                                                       \
		yajl_val v_ = at(tree, a, b);                                                      \
		UNIT_CHECK(v_ != NULL && YAJL_IS_NULL(v_), "%s.%s: not null", a, b ? b : "");      \
	} while (0)

/* The object's keys are exactly want, in that order. */
static void check_keys(yajl_val obj, const char *what, const char *const *want)
{
	UNIT_CHECK(obj && YAJL_IS_OBJECT(obj), "%s: not an object", what);
	if (!obj || !YAJL_IS_OBJECT(obj))
		return;
	size_t n = 0;
	for (; want[n]; n++) {
		const char *got = n < obj->u.object.len ? obj->u.object.keys[n] : "(none)";
		UNIT_CHECK(strcmp(got, want[n]) == 0, "%s key %zu is \"%s\", want \"%s\"", what, n,
			   got, want[n]);
	}
	UNIT_CHECK(obj->u.object.len == n, "%s has %zu keys, want %zu", what, obj->u.object.len, n);
}

static void check_repository(yajl_val t, const struct payload_event *ev, const char *name,
			     const char *url)
{
	check_keys(at(t, "repository", NULL), "repository", repo_keys);
	CHECK_INT(t, "repository", "comment_count", 0);
	CHECK_INT(t, "repository", "date_created", ev->namespace_created_at);
	CHECK_STR(t, "repository", "description", ev->description);
	CHECK_STR(t, "repository", "dockerfile", "");
	CHECK_STR(t, "repository", "full_description", "");
	CHECK_BOOL(t, "repository", "is_official", false);
	CHECK_BOOL(t, "repository", "is_private", ev->is_private);
	CHECK_BOOL(t, "repository", "is_trusted", false);
	CHECK_STR(t, "repository", "name", name);
	CHECK_STR(t, "repository", "namespace", ev->namespace_);
	CHECK_STR(t, "repository", "owner", ev->namespace_);
	CHECK_STR(t, "repository", "repo_name", ev->repository);
	CHECK_STR(t, "repository", "repo_url", url);
	CHECK_INT(t, "repository", "star_count", 0);
	CHECK_STR(t, "repository", "status", "Active");
}

UNIT_TEST(push)
{
	struct payload_event ev = push_event();
	yajl_val t = generate(&ev);
	if (!t)
		return;
	check_keys(t, "top level", top_keys_push);
	CHECK_STR(t, "action", NULL, "push");
	CHECK_STR(t, "callback_url", NULL, "https://reghook.example.com/callback/tok123");
	check_keys(at(t, "push_data", NULL), "push_data", push_keys);
	yajl_val images = at(t, "push_data", "images");
	UNIT_CHECK(images && YAJL_IS_ARRAY(images) && images->u.array.len == 1,
		   "push_data.images: not an array of one");
	if (images && YAJL_IS_ARRAY(images) && images->u.array.len == 1) {
		yajl_val d = images->u.array.values[0];
		UNIT_CHECK(YAJL_IS_STRING(d), "images[0]: not a string");
		if (YAJL_IS_STRING(d))
			UNIT_CHECK_STR(YAJL_GET_STRING(d), ev.digest);
	}
	CHECK_INT(t, "push_data", "pushed_at", 1417566161);
	CHECK_STR(t, "push_data", "pusher", "alice");
	CHECK_STR(t, "push_data", "tag", "latest");
	check_repository(t, &ev, "app", "https://registry.example.com/team-a/app");
	yajl_tree_free(t);
}

UNIT_TEST(push_without_digest_or_actor)
{
	struct payload_event ev = push_event();
	ev.digest = NULL;
	ev.actor = NULL;
	ev.is_private = false;
	ev.occurred_at = 4102444800LL; /* 2100: past 32 bits */
	yajl_val t = generate(&ev);
	if (!t)
		return;
	yajl_val images = at(t, "push_data", "images");
	UNIT_CHECK(images && YAJL_IS_ARRAY(images) && images->u.array.len == 0,
		   "push_data.images: not an empty array");
	CHECK_STR(t, "push_data", "pusher", "");
	CHECK_INT(t, "push_data", "pushed_at", 4102444800LL);
	CHECK_BOOL(t, "repository", "is_private", false);
	yajl_tree_free(t);
}

UNIT_TEST(delete_by_digest)
{
	struct payload_event ev = push_event();
	ev.action = "delete";
	ev.tag = NULL;
	ev.actor = "bob";
	ev.occurred_at = 1700000000;
	yajl_val t = generate(&ev);
	if (!t)
		return;
	check_keys(t, "top level", top_keys_delete);
	CHECK_STR(t, "action", NULL, "delete");
	check_keys(at(t, "delete_data", NULL), "delete_data", delete_keys);
	CHECK_INT(t, "delete_data", "deleted_at", 1700000000);
	CHECK_STR(t, "delete_data", "deleter", "bob");
	CHECK_NULL(t, "delete_data", "tag");
	CHECK_STR(t, "delete_data", "digest", ev.digest);
	UNIT_CHECK(!at(t, "push_data", NULL), "a delete carries push_data");
	check_repository(t, &ev, "app", "https://registry.example.com/team-a/app");
	yajl_tree_free(t);
}

UNIT_TEST(delete_by_tag)
{
	struct payload_event ev = push_event();
	ev.action = "delete";
	ev.digest = NULL;
	ev.actor = "";
	yajl_val t = generate(&ev);
	if (!t)
		return;
	CHECK_STR(t, "delete_data", "deleter", "");
	CHECK_STR(t, "delete_data", "tag", "latest");
	CHECK_NULL(t, "delete_data", "digest");
	yajl_tree_free(t);
}

UNIT_TEST(names_and_urls)
{
	static const struct {
		const char *namespace_, *name, *repository, *registry_url;
		const char *want_name, *want_url;
	} cases[] = {
		{"team-a", "app", "team-a/app", "https://r.example.com/", "app",
		 "https://r.example.com/team-a/app"},
		{"team-a", "app", "team-a/app", "https://r.example.com//", "app",
		 "https://r.example.com/team-a/app"},
		{"team-a/sub", "app", "team-a/sub/app", "https://r.example.com:5000", "app",
		 "https://r.example.com:5000/team-a/sub/app"},
		{"team-a/sub", "x/app", "team-a/sub/x/app", "https://r", "x/app",
		 "https://r/team-a/sub/x/app"},
		/* The repository is the namespace itself: name is its last component. */
		{"team-a", "", "team-a", "https://r", "team-a", "https://r/team-a"},
		{"team-a/sub", "", "team-a/sub", "https://r", "sub", "https://r/team-a/sub"},
		{"team-a/sub", NULL, "team-a/sub", "https://r", "sub", "https://r/team-a/sub"},
		/* No registry makes such names; a token may post them: encoded in the link. */
		{"team-a", "a b|x>y\"z%41", "team-a/a b|x>y\"z%41", "https://r", "a b|x>y\"z%41",
		 "https://r/team-a/a%20b%7Cx%3Ey%22z%2541"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct payload_event ev = push_event();
		ev.namespace_ = cases[i].namespace_;
		ev.name = cases[i].name;
		ev.repository = cases[i].repository;
		ev.registry_url = cases[i].registry_url;
		yajl_val t = generate(&ev);
		if (!t)
			continue;
		CHECK_STR(t, "repository", "name", cases[i].want_name);
		CHECK_STR(t, "repository", "repo_url", cases[i].want_url);
		CHECK_STR(t, "repository", "namespace", cases[i].namespace_);
		CHECK_STR(t, "repository", "owner", cases[i].namespace_);
		CHECK_STR(t, "repository", "repo_name", cases[i].repository);
		yajl_tree_free(t);
	}
}

UNIT_TEST(repo_url_from_the_event_host)
{
	static const struct {
		const char *registry_url, *host, *want; /* want NULL: repo_url is null */
	} cases[] = {
		{"", "registry.example.com", "https://registry.example.com/team-a/app"},
		{NULL, "registry.example.com:5000", "https://registry.example.com:5000/team-a/app"},
		{"", "10.0.0.7:5000", "https://10.0.0.7:5000/team-a/app"},
		{"", "[2001:db8::1]:443", "https://[2001:db8::1]:443/team-a/app"},
		/* Loopback registries are plain HTTP, as Docker assumes. */
		{"", "localhost:5000", "http://localhost:5000/team-a/app"},
		{"", "LOCALHOST", "http://LOCALHOST/team-a/app"},
		{"", "reg.localhost:5000", "http://reg.localhost:5000/team-a/app"},
		{"", "127.0.0.1:38411", "http://127.0.0.1:38411/team-a/app"},
		{"", "[::1]:5000", "http://[::1]:5000/team-a/app"},
		{"", "127.example.com", "https://127.example.com/team-a/app"},
		{"", "localhost.example.com", "https://localhost.example.com/team-a/app"},
		/* registry_url, when set, wins. */
		{"https://r.example.com/", "vm:5000", "https://r.example.com/team-a/app"},
		/* No usable host: null, never a relative URL. */
		{"", NULL, NULL},
		{NULL, "", NULL},
		{"", "evil.example.com/x", NULL},
		{"", "user@evil.example.com", NULL},
		{"", "a b", NULL},
		{"", " vm:5000", NULL},
		{"", "vm:", NULL},
		{"", "vm:0", NULL},
		{"", "vm:65536", NULL},
		{"", "vm:123456", NULL},
		{"", "vm:50x", NULL},
		{"", "-vm", NULL},
		{"", "vm.", NULL},
		{"", "[]:5000", NULL},
		{"", "[::1", NULL},
		{"", "[::1]x", NULL},
		{"", "[fe80::1%eth0]", NULL},
		{"", "vm\r\nX-Evil: 1", NULL},
		{"", "h\xc3\xa9.example.com", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct payload_event ev = push_event();
		ev.registry_url = cases[i].registry_url;
		ev.registry_host = cases[i].host;
		yajl_val t = generate(&ev);
		if (!t)
			continue;
		if (cases[i].want)
			CHECK_STR(t, "repository", "repo_url", cases[i].want);
		else
			CHECK_NULL(t, "repository", "repo_url");
		yajl_tree_free(t);
	}

	/* The length bound: 255 bytes pass, 256 do not. */
	char host[PAYLOAD_HOST_MAX + 2];
	memset(host, 'a', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	UNIT_CHECK(!payload_host_ok(host), "a %zu-byte host accepted", strlen(host));
	host[PAYLOAD_HOST_MAX] = '\0';
	UNIT_CHECK(payload_host_ok(host), "a %zu-byte host refused", strlen(host));
	UNIT_CHECK(payload_host_ok("registry.example.com:5000"), "a good host refused");
}

UNIT_TEST(escapes)
{
	struct payload_event ev = push_event();
	const char *desc = "say \"hi\" \\ back\\slash\n\ttab \x01\x1f ctl caf\xc3\xa9 \xe6\x97\xa5 "
			   "\xf0\x9f\x90\xb3 </script>";
	ev.description = desc;
	ev.actor = "\"quoted\"";
	ev.tag = "a\\b";
	ev.callback_url = "https://h/callback/x?a=1&b=\"2\"";
	struct buf out = BUF_INIT;
	UNIT_CHECK(payload_dockerhub(&ev, &out), "payload_dockerhub failed");
	/* Control characters are escaped, never raw. */
	for (size_t i = 0; i < out.len; i++)
		UNIT_CHECK((unsigned char)out.data[i] >= 0x20, "raw control byte 0x%02x at %zu",
			   (unsigned char)out.data[i], i);
	UNIT_CHECK(strstr(buf_cstr(&out), "\\\"hi\\\""), "quotes not escaped: %s", buf_cstr(&out));
	buf_free(&out);

	yajl_val t = generate(&ev);
	if (!t)
		return;
	CHECK_STR(t, "repository", "description", desc);
	CHECK_STR(t, "push_data", "pusher", "\"quoted\"");
	CHECK_STR(t, "push_data", "tag", "a\\b");
	CHECK_STR(t, "callback_url", NULL, "https://h/callback/x?a=1&b=\"2\"");
	yajl_tree_free(t);
}

UNIT_TEST(refusals)
{
	struct payload_event ev = push_event();
	struct buf out = BUF_INIT;
	buf_puts(&out, "kept");

	ev.action = "pull";
	UNIT_CHECK(!payload_dockerhub(&ev, &out), "action pull accepted");
	ev.action = NULL;
	UNIT_CHECK(!payload_dockerhub(&ev, &out), "no action accepted");
	ev = push_event();
	ev.description = "bad \xc3\x28 utf-8";
	UNIT_CHECK(!payload_dockerhub(&ev, &out), "invalid UTF-8 accepted");
	ev = push_event();
	ev.tag = "\xff";
	UNIT_CHECK(!payload_dockerhub(&ev, &out), "invalid UTF-8 tag accepted");
	UNIT_CHECK_STR(buf_cstr(&out), "kept");

	/* A success appends after what is there. */
	ev = push_event();
	UNIT_CHECK(payload_dockerhub(&ev, &out), "valid payload refused");
	UNIT_CHECK(strncmp(buf_cstr(&out), "kept{\"action\":\"push\",", 21) == 0,
		   "output does not start as expected: %.40s", buf_cstr(&out));
	buf_free(&out);
}

int main(void)
{
	UNIT_RUN(push);
	UNIT_RUN(push_without_digest_or_actor);
	UNIT_RUN(delete_by_digest);
	UNIT_RUN(delete_by_tag);
	UNIT_RUN(names_and_urls);
	UNIT_RUN(repo_url_from_the_event_host);
	UNIT_RUN(escapes);
	UNIT_RUN(refusals);
	return UNIT_DONE();
}
