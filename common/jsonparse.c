/*
 * jsonparse: see jsonparse.h.
 *
 * DESIGN. yajl's event parser, with comments off and its own UTF-8 check
 * on, reads the text once; its callbacks build the tree on an explicit
 * stack of open containers (never deeper than max_depth, so nothing here
 * or in yajl_tree_free recurses further). A callback that finds a rule
 * broken records why and cancels the parse. Strings are judged on their
 * raw token, found behind the offset yajl has reached: the decoded text
 * has lost what matters (an unpaired surrogate escape becomes '?').
 */
#include "jsonparse.h"
#include "buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

struct frame {
	yajl_val node; /* borrowed: owned by its parent, or the root */
	size_t cap;    /* room in the node's arrays */
	char *key;     /* owned: an object's key waiting for its value */
};

struct ctx {
	const struct jsonparse_limits *lim;
	yajl_handle h;
	const unsigned char *text;
	size_t len;
	struct frame *stack; /* owned: max_depth frames */
	int depth;
	yajl_val root;	 /* owned until handed to the caller */
	size_t root_end; /* the offset where the root value ended */
	bool finishing;	 /* in yajl_complete_parse, past the text */
	enum jsonparse_status status;
	char *err;
	size_t errlen;
};

#define FAIL(c, st, ...)                                                                           \
	do {                                                                                       \
		(c)->status = (st);                                                                \
		snprintf((c)->err, (c)->errlen, __VA_ARGS__);                                      \
		return 0;                                                                          \
	} while (0)

static size_t offset(const struct ctx *c)
{
	return yajl_get_bytes_consumed(c->h);
}

bool jsonparse_utf8_ok(const unsigned char *s, size_t n, size_t *bad)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		size_t len;
		unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			if (c == 0xe0)
				lo = 0xa0; /* overlong */
			else if (c == 0xed)
				hi = 0x9f; /* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			if (c == 0xf0)
				lo = 0x90; /* overlong */
			else if (c == 0xf4)
				hi = 0x8f; /* above U+10FFFF */
		} else {
			*bad = i;
			return false;
		}
		bool ok = n - i >= len && s[i + 1] >= lo && s[i + 1] <= hi;
		for (size_t k = 2; ok && k < len; k++)
			ok = s[i + k] >= 0x80 && s[i + k] <= 0xbf;
		if (!ok) {
			*bad = i;
			return false;
		}
		i += len;
	}
	return true;
}

/* The value of the 4 hex digits at s, or -1. */
static int hex4(const unsigned char *s)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = s[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/*
 * Judges the string token yajl has just read, from its raw bytes: it ends
 * at the closing quote before the current offset and starts at the
 * nearest quote before that which no odd run of backslashes escapes (a
 * string holds no other unescaped quote). yajl has checked its escapes'
 * syntax already.
 */
static int check_string(struct ctx *c)
{
	size_t end = offset(c);
	if (end == 0 || end > c->len || c->text[end - 1] != '"')
		FAIL(c, JSONPARSE_BAD, "not JSON: string token not found at byte %zu", end);
	end--;
	size_t start = end;
	for (;;) {
		if (start == 0)
			FAIL(c, JSONPARSE_BAD, "not JSON: string token not found at byte %zu", end);
		start--;
		if (c->text[start] != '"')
			continue;
		size_t slashes = 0;
		while (slashes < start && c->text[start - 1 - slashes] == '\\')
			slashes++;
		if (slashes % 2 == 0)
			break;
	}
	const unsigned char *s = c->text;
	for (size_t i = start + 1; i < end;) {
		if (s[i] >= 0x80) {
			size_t len = s[i] >= 0xf0 ? 4 : s[i] >= 0xe0 ? 3 : 2, bad;
			if (len > end - i || !jsonparse_utf8_ok(s + i, len, &bad))
				FAIL(c, JSONPARSE_BAD, "not JSON: invalid UTF-8 at byte %zu", i);
			i += len;
			continue;
		}
		if (s[i] != '\\') {
			i++;
			continue;
		}
		if (s[i + 1] != 'u') {
			i += 2;
			continue;
		}
		int u = hex4(s + i + 2);
		if (u == 0)
			FAIL(c, JSONPARSE_BAD, "\\u0000 at byte %zu: NUL is not allowed in strings",
			     i);
		if (u >= 0xdc00 && u <= 0xdfff)
			FAIL(c, JSONPARSE_BAD, "unpaired UTF-16 surrogate \\u%04x at byte %zu", u,
			     i);
		if (u >= 0xd800 && u <= 0xdbff) {
			int low = i + 12 <= end && s[i + 6] == '\\' && s[i + 7] == 'u'
					  ? hex4(s + i + 8)
					  : -1;
			if (low < 0xdc00 || low > 0xdfff)
				FAIL(c, JSONPARSE_BAD,
				     "unpaired UTF-16 surrogate \\u%04x at byte %zu", u, i);
			i += 6;
		}
		i += 6;
	}
	return 1;
}

/*
 * Notes where the root value ended. A number at the very end of the text
 * ends only when yajl_complete_parse feeds its own padding, where the
 * offset no longer counts in the text.
 */
static void root_done(struct ctx *c)
{
	c->root_end = c->finishing ? c->len : offset(c);
}

static yajl_val node_new(yajl_type type)
{
	yajl_val v = xcalloc(1, sizeof(*v));
	v->type = type;
	return v;
}

/* Hands v (owned) to the open container, or makes it the root. */
static int add(struct ctx *c, yajl_val v)
{
	if (c->depth == 0) {
		c->root = v;
		if (!YAJL_IS_OBJECT(v) && !YAJL_IS_ARRAY(v))
			root_done(c);
		return 1;
	}
	struct frame *f = &c->stack[c->depth - 1];
	yajl_val p = f->node;
	if (YAJL_IS_ARRAY(p)) {
		if (c->depth == 2 && YAJL_IS_OBJECT(c->stack[0].node) && c->lim->max_top_elements &&
		    p->u.array.len >= c->lim->max_top_elements) {
			yajl_tree_free(v);
			FAIL(c, JSONPARSE_TOO_MANY,
			     "more than %zu elements in an array of the top-level object",
			     c->lim->max_top_elements);
		}
		if (p->u.array.len == f->cap) {
			f->cap = f->cap ? f->cap * 2 : 8;
			p->u.array.values = xrealloc(p->u.array.values, f->cap * sizeof(yajl_val));
		}
		p->u.array.values[p->u.array.len++] = v;
		return 1;
	}
	if (p->u.object.len == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 8;
		p->u.object.keys = xrealloc(p->u.object.keys, f->cap * sizeof(char *));
		p->u.object.values = xrealloc(p->u.object.values, f->cap * sizeof(yajl_val));
	}
	p->u.object.keys[p->u.object.len] = f->key;
	p->u.object.values[p->u.object.len++] = v;
	f->key = NULL;
	return 1;
}

static int on_null(void *arg)
{
	return add(arg, node_new(yajl_t_null));
}

static int on_boolean(void *arg, int b)
{
	return add(arg, node_new(b ? yajl_t_true : yajl_t_false));
}

/*
 * As yajl_tree fills numbers: the text, and its integer and double values
 * when they fit. A number is at most JSONPARSE_NUMBER_MAX characters and
 * its exponent within +-JSONPARSE_EXPONENT_MAX: PostgreSQL keeps numbers
 * exactly and writes them back in full, so the 9 bytes of 1e131071 came
 * back as 131,072 digits, and a 20 KB envelope of them as 131 MB at every
 * delivery of its event.
 */
static int on_number(void *arg, const char *s, size_t len)
{
	struct ctx *c = arg;
	const char *e = memchr(s, 'e', len);
	if (!e)
		e = memchr(s, 'E', len);
	long exponent = 0;
	if (e) {
		const char *d = e + 1 + (e + 1 < s + len && (e[1] == '+' || e[1] == '-'));
		for (; d < s + len && exponent <= JSONPARSE_EXPONENT_MAX; d++)
			exponent = exponent * 10 + (*d - '0');
	}
	if (len > JSONPARSE_NUMBER_MAX || exponent > JSONPARSE_EXPONENT_MAX)
		FAIL(c, JSONPARSE_BAD,
		     "number before byte %zu out of range: at most %d characters, exponent "
		     "within +-%d",
		     offset(c), JSONPARSE_NUMBER_MAX, JSONPARSE_EXPONENT_MAX);
	yajl_val v = node_new(yajl_t_number);
	char *end;
	v->u.number.r = xstrndup(s, len);
	errno = 0;
	v->u.number.i = strtoll(v->u.number.r, &end, 10);
	if (errno == 0 && *end == '\0')
		v->u.number.flags |= YAJL_NUMBER_INT_VALID;
	errno = 0;
	v->u.number.d = strtod(v->u.number.r, &end);
	if (errno == 0 && *end == '\0')
		v->u.number.flags |= YAJL_NUMBER_DOUBLE_VALID;
	return add(arg, v);
}

static int on_string(void *arg, const unsigned char *s, size_t len)
{
	if (!check_string(arg))
		return 0;
	yajl_val v = node_new(yajl_t_string);
	v->u.string = xstrndup((const char *)s, len);
	return add(arg, v);
}

static int on_key(void *arg, const unsigned char *s, size_t len)
{
	struct ctx *c = arg;
	if (!check_string(c))
		return 0;
	struct frame *f = &c->stack[c->depth - 1];
	free(f->key);
	f->key = xstrndup((const char *)s, len);
	return 1;
}

static int open_container(struct ctx *c, yajl_type type)
{
	if (c->depth >= c->lim->max_depth)
		FAIL(c, JSONPARSE_BAD, "JSON nested deeper than %d levels", c->lim->max_depth);
	yajl_val v = node_new(type);
	if (!add(c, v))
		return 0;
	c->stack[c->depth++] = (struct frame){v, 0, NULL};
	return 1;
}

static int on_start_map(void *arg)
{
	return open_container(arg, yajl_t_object);
}

static int on_start_array(void *arg)
{
	return open_container(arg, yajl_t_array);
}

static int by_text(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int on_end_map(void *arg)
{
	struct ctx *c = arg;
	yajl_val v = c->stack[--c->depth].node;
	size_t n = v->u.object.len;
	if (c->depth == 0)
		root_done(c);
	if (n < 2)
		return 1;
	/* Sorted copies of the keys: equal ones end up side by side. */
	const char **keys = xmalloc(n * sizeof(char *));
	memcpy(keys, v->u.object.keys, n * sizeof(char *));
	qsort(keys, n, sizeof(char *), by_text);
	const char *dup = NULL;
	for (size_t i = 1; i < n && !dup; i++)
		if (strcmp(keys[i - 1], keys[i]) == 0)
			dup = keys[i];
	if (dup) {
		c->status = JSONPARSE_BAD;
		snprintf(c->err, c->errlen,
			 "duplicate key \"%.64s\" in the object ending at byte %zu", dup,
			 offset(c));
	}
	free(keys);
	return !dup;
}

static int on_end_array(void *arg)
{
	struct ctx *c = arg;
	if (--c->depth == 0)
		root_done(c);
	return 1;
}

static const yajl_callbacks callbacks = {
	.yajl_null = on_null,
	.yajl_boolean = on_boolean,
	.yajl_number = on_number,
	.yajl_string = on_string,
	.yajl_start_map = on_start_map,
	.yajl_map_key = on_key,
	.yajl_end_map = on_end_map,
	.yajl_start_array = on_start_array,
	.yajl_end_array = on_end_array,
};

enum jsonparse_status jsonparse(const char *text, size_t len, const struct jsonparse_limits *lim,
				yajl_val *out, char *err, size_t errlen)
{
	struct ctx c = {.lim = lim,
			.text = (const unsigned char *)text,
			.len = len,
			.status = JSONPARSE_OK,
			.err = err,
			.errlen = errlen};
	*out = NULL;
	if (len == 0) {
		snprintf(err, errlen, "not JSON: empty");
		return JSONPARSE_BAD;
	}
	/*
	 * Bytes that are JSON nowhere: not in a string (control characters
	 * must be escaped there), nor between tokens (yajl alone takes \v and
	 * \f for whitespace).
	 */
	static const char banned[] = {'\0', '\v', '\f'};
	for (size_t i = 0; i < sizeof(banned); i++) {
		const char *at = memchr(text, banned[i], len);
		if (at) {
			if (banned[i] == '\0')
				snprintf(err, errlen, "not JSON: NUL byte at byte %zu",
					 (size_t)(at - text));
			else
				snprintf(err, errlen,
					 "not JSON: control character 0x%02x at byte %zu",
					 (unsigned)banned[i], (size_t)(at - text));
			return JSONPARSE_BAD;
		}
	}
	c.stack = xcalloc((size_t)lim->max_depth + 1, sizeof(struct frame));
	c.h = yajl_alloc(&callbacks, NULL, &c);
	yajl_config(c.h, yajl_allow_comments, 0);
	/* check_string() judges UTF-8 strictly; yajl's own check lets overlong forms by. */
	yajl_config(c.h, yajl_dont_validate_strings, 1);
	yajl_status st = yajl_parse(c.h, c.text, len);
	if (st == yajl_status_ok) {
		c.finishing = true;
		st = yajl_complete_parse(c.h);
	}
	/*
	 * yajl takes a token left open at the end (`{} "x`) for one still
	 * arriving, and then forgets it: after the root only whitespace may
	 * follow.
	 */
	for (size_t i = c.root_end; st == yajl_status_ok && i < len; i++) {
		if (!strchr(" \t\r\n", c.text[i])) {
			snprintf(err, errlen, "not JSON: trailing garbage at byte %zu", i);
			c.status = JSONPARSE_BAD;
			break;
		}
	}
	if (st != yajl_status_ok && c.status == JSONPARSE_OK) {
		unsigned char *msg = yajl_get_error(c.h, 0, NULL, 0);
		char *nl = strchr((char *)msg, '\n');
		if (nl)
			*nl = '\0';
		snprintf(err, errlen, "not JSON: %s at byte %zu", (const char *)msg, offset(&c));
		yajl_free_error(c.h, msg);
		c.status = JSONPARSE_BAD;
	}
	for (int i = 0; i <= lim->max_depth; i++)
		free(c.stack[i].key);
	free(c.stack);
	yajl_free(c.h);
	if (c.status != JSONPARSE_OK) {
		yajl_tree_free(c.root);
		return c.status;
	}
	*out = c.root;
	return JSONPARSE_OK;
}
