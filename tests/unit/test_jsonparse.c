/*
 * Unit tests of common/jsonparse.c: what strict JSON refuses (comments,
 * foreign whitespace, deep nesting, bad strings, duplicate keys), the
 * element limit, and that what it accepts is the tree yajl would build.
 * The cases that once got past the old pre-scan (a quote inside a comment
 * hid everything after it) are here by name.
 */
#include "buf.h"
#include "jsonparse.h"
#include "unit.h"

#include <stdlib.h>

/* Depth 32 as envelopes have; arrays of the top-level object up to 3 elements. */
static const struct jsonparse_limits limits = {32, 3}, unlimited = {32, 0};

/* Parses body; returns the status and leaves the error in err. */
static enum jsonparse_status parse_with(const struct jsonparse_limits *lim, const char *body,
					size_t len, char *err, size_t errlen)
{
	yajl_val tree = NULL;
	enum jsonparse_status st = jsonparse(body, len, lim, &tree, err, errlen);
	if (st == JSONPARSE_OK && !tree)
		snprintf(err, errlen, "OK without a tree");
	if (st != JSONPARSE_OK && tree)
		snprintf(err, errlen, "a tree with an error");
	yajl_tree_free(tree);
	return st;
}

static enum jsonparse_status parse(const char *body, size_t len, char *err, size_t errlen)
{
	return parse_with(&limits, body, len, err, errlen);
}

UNIT_TEST(refused)
{
	static const struct {
		const char *body;
		const char *fragment;
	} cases[] = {
		{"{\"a\":1 /* c */}", "not JSON"},
		{"/**/{\"a\":1}", "not JSON"},
		{"{\"a\":1}// c", "not JSON"},
		{"{\"a\":1}\n// \"", "not JSON"},
		{"{\"a\":\v1}", "control character 0x0b at byte 5"},
		{"{\"a\":\f1}", "control character 0x0c at byte 5"},
		{"{\"a\":\"\t\"}", "not JSON"}, /* raw control character in a string */
		{"{\"a\":1,}", "not JSON"},
		{"[1,]", "not JSON"},
		{"{\"a\":01}", "not JSON"},
		{"{\"a\":1} {\"b\":2}", "not JSON"},
		{"{\"a\":1} x", "not JSON"},
		{"{\"events\":[]} \"x", "trailing garbage at byte 14"}, /* yajl lets it by */
		{"null\"{\xff", "trailing garbage"},
		{"1 \"", "trailing garbage"},
		{"{'a':1}", "not JSON"},
		{"{\"a\":NaN}", "not JSON"},
		{"{\"a\":\"\\x41\"}", "not JSON"},
		{"{\"a\":1,\"a\":2}", "duplicate key \"a\""},
		{"{\"b\":{\"k\":1,\"j\":2,\"k\":3}}", "duplicate key \"k\""},
		{"{\"a\\u0000b\":1}", "\\u0000 at byte 3"},
		{"{\"\\ud800\":1}", "unpaired UTF-16 surrogate"},
		{"[\"\\udfff\"]", "unpaired UTF-16 surrogate \\udfff"},
		{"[\"\\ud800\\ud800\"]", "unpaired"},
		{"[\"\xc0\x80\"]", "invalid UTF-8 at byte 2"},
		{"[\"ok\",\"\xed\xbf\xbf\"]", "invalid UTF-8 at byte 7"},
		{"[\"\xf8\x88\x80\x80\x80\"]", "invalid UTF-8"},
		{"[\"\xe2\x82\"]", "invalid UTF-8"},
		{"{\"size\":1e131071}", "number before byte 16 out of range"},
		{"[1E+21]", "out of range"},
		{"[-1.5e-21]", "out of range"},
		{"[1e000000000000000000000000000000000000000000000000001]", "out of range"},
		{"[12345678901234567890123456789012345678901]", "at most 40 characters"},
		{"", "not JSON: empty"},
		{" ", "not JSON"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[256] = "";
		enum jsonparse_status st =
			parse(cases[i].body, strlen(cases[i].body), err, sizeof(err));
		UNIT_CHECK(st == JSONPARSE_BAD && strstr(err, cases[i].fragment),
			   "case %zu: status %d, error '%s', wanted '%s'", i, st, err,
			   cases[i].fragment);
	}
	char err[256];
	UNIT_CHECK(parse("[1]\0", 4, err, sizeof(err)) == JSONPARSE_BAD &&
			   strstr(err, "NUL byte at byte 3"),
		   "a NUL byte: %s", err);
}

UNIT_TEST(accepted)
{
	static const char *const cases[] = {
		"{}",
		"[]",
		" \t\r\n{\"a\" : [1, -2.5e+3, true, false, null, \"x\"]}\n",
		"\"\\ud83d\\udc33 \\u00e9 \\\\u0000 \\\" \\/ \\b\\f\\n\\r\\t\"",
		"{\"caf\xc3\xa9\":\"\xe2\x82\xac \xf0\x9f\x90\xb3\"}",
		"[\"\\\\\",\"\\\\\\\"\"]", /* a backslash before the closing quote */
		"{\"a\":1,\"A\":2,\"a \":3}",
		"12345678901234567890123",
		"[1e20,1E-20,-2.5e+20,1234567890123456789012345678901234567890]",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[256] = "";
		UNIT_CHECK(parse_with(&unlimited, cases[i], strlen(cases[i]), err, sizeof(err)) ==
				   JSONPARSE_OK,
			   "case %zu: %s", i, err);
	}
}

/* A body of n '[' then n ']', after an optional prefix. */
static char *nested(const char *prefix, size_t n, size_t *len)
{
	size_t p = strlen(prefix);
	char *s = malloc(p + 2 * n + 1);
	memcpy(s, prefix, p);
	memset(s + p, '[', n);
	memset(s + p + n, ']', n);
	*len = p + 2 * n;
	s[*len] = '\0';
	return s;
}

/*
 * 400,000 levels crashed the daemon when a comment holding a quote came
 * first; now the 33rd level is refused before it exists, comment or not.
 */
UNIT_TEST(depth)
{
	static const char *const prefixes[] = {"", "/*\"*/", "\"", " "};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t len;
		char err[256] = "";
		char *s = nested(prefixes[i], 400000, &len);
		UNIT_CHECK(parse(s, len, err, sizeof(err)) == JSONPARSE_BAD, "prefix %zu: %s", i,
			   err);
		free(s);
	}
	size_t len;
	char err[256] = "";
	char *s = nested("", 32, &len);
	UNIT_CHECK(parse(s, len, err, sizeof(err)) == JSONPARSE_OK, "32 levels: %s", err);
	free(s);
	s = nested("", 33, &len);
	UNIT_CHECK(parse(s, len, err, sizeof(err)) == JSONPARSE_BAD &&
			   strstr(err, "nested deeper than 32"),
		   "33 levels: %s", err);
	free(s);
}

UNIT_TEST(element_limit)
{
	char err[256] = "";
	const char *three = "{\"events\":[1,2,3],\"x\":[[1,2,3,4,5]]}";
	UNIT_CHECK(parse(three, strlen(three), err, sizeof(err)) == JSONPARSE_OK, "%s", err);
	const char *four = "{\"x\":1,\"events\":[{},{},{},{}]}";
	UNIT_CHECK(parse(four, strlen(four), err, sizeof(err)) == JSONPARSE_TOO_MANY &&
			   strstr(err, "more than 3 elements"),
		   "%s", err);
	/* Only arrays of the top-level object count; a top-level array does not. */
	const char *top = "[[1,2,3,4,5]]";
	UNIT_CHECK(parse(top, strlen(top), err, sizeof(err)) == JSONPARSE_OK, "%s", err);
	/* A comment cannot hide the count: it is refused first, as not JSON. */
	const char *hidden = "{\"events\":[/*\"*/1,2,3,4]}";
	UNIT_CHECK(parse(hidden, strlen(hidden), err, sizeof(err)) == JSONPARSE_BAD, "%s", err);
}

/* The tree is yajl's type, with yajl's number fields filled. */
UNIT_TEST(tree)
{
	const char *body = "{\"s\":\"a\\nb\",\"n\":[42,-1.5,1e20,99999999999999999999],"
			   "\"o\":{\"t\":true,\"z\":null}}";
	yajl_val tree;
	char err[256] = "";
	UNIT_CHECK(jsonparse(body, strlen(body), &unlimited, &tree, err, sizeof(err)) ==
			   JSONPARSE_OK,
		   "%s", err);
	if (!tree)
		return;
	const char *ps[] = {"s", NULL}, *pn[] = {"n", NULL}, *pt[] = {"o", "t", NULL};
	yajl_val s = yajl_tree_get(tree, ps, yajl_t_string);
	UNIT_CHECK(unit_streq(YAJL_GET_STRING(s), "a\nb"), "string");
	yajl_val n = yajl_tree_get(tree, pn, yajl_t_array);
	UNIT_CHECK(n && n->u.array.len == 4, "array");
	if (n && n->u.array.len == 4) {
		UNIT_CHECK(YAJL_IS_INTEGER(n->u.array.values[0]) &&
				   YAJL_GET_INTEGER(n->u.array.values[0]) == 42,
			   "integer");
		UNIT_CHECK(YAJL_IS_DOUBLE(n->u.array.values[1]) &&
				   YAJL_GET_DOUBLE(n->u.array.values[1]) == -1.5,
			   "double");
		UNIT_CHECK(unit_streq(YAJL_GET_NUMBER(n->u.array.values[2]), "1e20") &&
				   YAJL_IS_DOUBLE(n->u.array.values[2]) &&
				   !YAJL_IS_INTEGER(n->u.array.values[2]),
			   "an exponent: a double, with its text");
		UNIT_CHECK(!YAJL_IS_INTEGER(n->u.array.values[3]) &&
				   unit_streq(YAJL_GET_NUMBER(n->u.array.values[3]),
					      "99999999999999999999"),
			   "an overflowing integer keeps its text");
	}
	UNIT_CHECK(yajl_tree_get(tree, pt, yajl_t_true) != NULL, "true");
	yajl_tree_free(tree);
}

int main(void)
{
	unit_run("refused", refused);
	unit_run("accepted", accepted);
	unit_run("depth", depth);
	unit_run("element_limit", element_limit);
	unit_run("tree", tree);
	return unit_done();
}
