/*
 * libFuzzer harness for common/jsonparse.c, differential: every input is
 * judged twice, by jsonparse (yajl's event parser and the rules layered
 * on it) and by ref_parse below, a recursive-descent reading of RFC 8259
 * written apart from it, with the same rules (depth 32, no \u0000, paired
 * surrogates, strict UTF-8, no duplicate keys, numbers of at most 40
 * characters with an exponent within +-20, at most MAX_TOP elements in
 * an array of the top-level object). The two must give the same verdict
 * on every input: OK, BAD or TOO_MANY, the first rule broken in document
 * order deciding between the last two. An accepted text must also come
 * back the same through yajl_gen and a second parse.
 *
 * The old pre-scan would have failed here at once: a comment holding a
 * quote made it skip every check after it, while yajl_tree_parse read on.
 */
#include "buf.h"
#include "jsonparse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#define MAX_DEPTH 32
#define MAX_TOP 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct ref {
	const unsigned char *s;
	size_t len, i;
	int depth;
	bool top_is_object;
	enum jsonparse_status status; /* the first rule broken */
};

static bool fail(struct ref *r, enum jsonparse_status st)
{
	r->status = st;
	return false;
}

static void ws(struct ref *r)
{
	while (r->i < r->len && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' ||
				 r->s[r->i] == '\r'))
		r->i++;
}

static int hexval(struct ref *r, size_t at)
{
	if (at + 4 > r->len)
		return -1;
	int v = 0;
	for (size_t k = at; k < at + 4; k++) {
		char c = (char)r->s[k];
		if (c >= '0' && c <= '9')
			v = v * 16 + c - '0';
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = v * 16 + c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static void put_utf8(struct buf *out, unsigned cp)
{
	if (cp < 0x80) {
		buf_putc(out, (char)cp);
	} else if (cp < 0x800) {
		buf_putc(out, (char)(0xc0 | cp >> 6));
		buf_putc(out, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		buf_putc(out, (char)(0xe0 | cp >> 12));
		buf_putc(out, (char)(0x80 | ((cp >> 6) & 0x3f)));
		buf_putc(out, (char)(0x80 | (cp & 0x3f)));
	} else {
		buf_putc(out, (char)(0xf0 | cp >> 18));
		buf_putc(out, (char)(0x80 | ((cp >> 12) & 0x3f)));
		buf_putc(out, (char)(0x80 | ((cp >> 6) & 0x3f)));
		buf_putc(out, (char)(0x80 | (cp & 0x3f)));
	}
}

/* A string at r->i (on its quote), decoded into out. */
static bool ref_string(struct ref *r, struct buf *out)
{
	r->i++;
	for (;;) {
		if (r->i >= r->len)
			return fail(r, JSONPARSE_BAD);
		unsigned char c = r->s[r->i];
		if (c == '"') {
			r->i++;
			return true;
		}
		if (c < 0x20)
			return fail(r, JSONPARSE_BAD);
		if (c >= 0x80) {
			size_t bad, n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
			if (r->i + n > r->len || !jsonparse_utf8_ok(r->s + r->i, n, &bad))
				return fail(r, JSONPARSE_BAD);
			buf_append(out, r->s + r->i, n);
			r->i += n;
			continue;
		}
		if (c != '\\') {
			buf_putc(out, (char)c);
			r->i++;
			continue;
		}
		if (r->i + 1 >= r->len)
			return fail(r, JSONPARSE_BAD);
		const char *simple = strchr("\"\\/bfnrt", r->s[r->i + 1]);
		if (simple && r->s[r->i + 1]) {
			static const char decoded[] = "\"\\/\b\f\n\r\t";
			buf_putc(out, decoded[simple - "\"\\/bfnrt"]);
			r->i += 2;
			continue;
		}
		if (r->s[r->i + 1] != 'u')
			return fail(r, JSONPARSE_BAD);
		int u = hexval(r, r->i + 2);
		if (u <= 0 || (u >= 0xdc00 && u <= 0xdfff))
			return fail(r, JSONPARSE_BAD);
		r->i += 6;
		if (u >= 0xd800 && u <= 0xdbff) {
			int low = r->i + 1 < r->len && r->s[r->i] == '\\' && r->s[r->i + 1] == 'u'
					  ? hexval(r, r->i + 2)
					  : -1;
			if (low < 0xdc00 || low > 0xdfff)
				return fail(r, JSONPARSE_BAD);
			u = 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00);
			r->i += 6;
		}
		put_utf8(out, (unsigned)u);
	}
}

static bool digits(struct ref *r)
{
	size_t start = r->i;
	while (r->i < r->len && r->s[r->i] >= '0' && r->s[r->i] <= '9')
		r->i++;
	return r->i > start;
}

static bool ref_number(struct ref *r)
{
	size_t start = r->i;
	long exponent = 0;
	if (r->s[r->i] == '-')
		r->i++;
	if (r->i < r->len && r->s[r->i] == '0')
		r->i++;
	else if (!digits(r))
		return fail(r, JSONPARSE_BAD);
	if (r->i < r->len && r->s[r->i] == '.') {
		r->i++;
		if (!digits(r))
			return fail(r, JSONPARSE_BAD);
	}
	if (r->i < r->len && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
		r->i++;
		if (r->i < r->len && (r->s[r->i] == '+' || r->s[r->i] == '-'))
			r->i++;
		size_t from = r->i;
		if (!digits(r))
			return fail(r, JSONPARSE_BAD);
		for (size_t k = from; k < r->i && exponent <= 1000; k++)
			exponent = exponent * 10 + (r->s[k] - '0');
	}
	/* Not too long, exponent within bounds (what PostgreSQL would expand). */
	if (r->i - start > JSONPARSE_NUMBER_MAX || exponent > JSONPARSE_EXPONENT_MAX)
		return fail(r, JSONPARSE_BAD);
	return true;
}

static bool ref_value(struct ref *r, size_t *count);

/* One more element of an array: a limit on those of the top-level object. */
static bool counted(struct ref *r, size_t *count)
{
	if (count && r->depth == 2 && r->top_is_object && ++*count > MAX_TOP)
		return fail(r, JSONPARSE_TOO_MANY);
	return true;
}

static bool ref_container(struct ref *r, size_t *count)
{
	bool object = r->s[r->i] == '{';
	if (r->depth == MAX_DEPTH)
		return fail(r, JSONPARSE_BAD);
	if (r->depth == 0)
		r->top_is_object = object;
	/* Counted when opened, as the parser adds a container to its parent then. */
	if (!counted(r, count))
		return false;
	r->depth++;
	r->i++;
	size_t elements = 0;
	struct buf keys = BUF_INIT; /* decoded keys, each ended by a NUL */
	size_t nkeys = 0;
	bool ok = false;
	ws(r);
	if (r->i < r->len && r->s[r->i] == (object ? '}' : ']')) {
		r->i++;
		ok = true;
		goto done;
	}
	for (;;) {
		if (object) {
			struct buf key = BUF_INIT;
			ws(r);
			if (r->i >= r->len || r->s[r->i] != '"') {
				buf_free(&key);
				goto bad;
			}
			bool good = ref_string(r, &key);
			buf_putc(&key, '\0');
			buf_append(&keys, key.data, key.len);
			buf_free(&key);
			if (!good)
				goto out;
			nkeys++;
			ws(r);
			if (r->i >= r->len || r->s[r->i] != ':')
				goto bad;
			r->i++;
		}
		if (!ref_value(r, object ? NULL : &elements))
			goto out;
		ws(r);
		if (r->i >= r->len)
			goto bad;
		if (r->s[r->i] == ',') {
			r->i++;
			continue;
		}
		if (r->s[r->i] != (object ? '}' : ']'))
			goto bad;
		r->i++;
		break;
	}
	/* Duplicate keys are found when the object closes. */
	for (size_t a = 0, pa = 0; a < nkeys; a++) {
		const char *ka = keys.data + pa;
		for (size_t b = a + 1, pb = pa + strlen(ka) + 1; b < nkeys; b++) {
			const char *kb = keys.data + pb;
			if (strcmp(ka, kb) == 0)
				goto bad;
			pb += strlen(kb) + 1;
		}
		pa += strlen(ka) + 1;
	}
	ok = true;
	goto done;
bad:
	fail(r, JSONPARSE_BAD);
out:
	ok = false;
done:
	buf_free(&keys);
	r->depth--;
	return ok;
}

static bool literal(struct ref *r, const char *word)
{
	size_t n = strlen(word);
	if (r->len - r->i < n || memcmp(r->s + r->i, word, n) != 0)
		return fail(r, JSONPARSE_BAD);
	r->i += n;
	return true;
}

static bool ref_value(struct ref *r, size_t *count)
{
	ws(r);
	if (r->i >= r->len)
		return fail(r, JSONPARSE_BAD);
	unsigned char c = r->s[r->i];
	bool ok;
	if (c == '{' || c == '[')
		return ref_container(r, count);
	if (c == '"') {
		struct buf b = BUF_INIT;
		ok = ref_string(r, &b);
		buf_free(&b);
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		ok = ref_number(r);
	} else if (c == 't') {
		ok = literal(r, "true");
	} else if (c == 'f') {
		ok = literal(r, "false");
	} else if (c == 'n') {
		ok = literal(r, "null");
	} else {
		return fail(r, JSONPARSE_BAD);
	}
	/* Counted once whole, as the parser adds a scalar when its token ends. */
	return ok && counted(r, count);
}

static enum jsonparse_status ref_parse(const uint8_t *data, size_t size)
{
	struct ref r = {data, size, 0, 0, false, JSONPARSE_OK};
	if (memchr(data, '\0', size) || memchr(data, '\v', size) || memchr(data, '\f', size))
		return JSONPARSE_BAD;
	if (!ref_value(&r, NULL))
		return r.status;
	ws(&r);
	return r.i == size ? JSONPARSE_OK : JSONPARSE_BAD;
}

static void gen(yajl_gen g, yajl_val v)
{
	if (YAJL_IS_STRING(v)) {
		yajl_gen_string(g, (const unsigned char *)v->u.string, strlen(v->u.string));
	} else if (YAJL_IS_NUMBER(v)) {
		yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
	} else if (YAJL_IS_OBJECT(v)) {
		yajl_gen_map_open(g);
		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];
			yajl_gen_string(g, (const unsigned char *)k, strlen(k));
			gen(g, v->u.object.values[i]);
		}
		yajl_gen_map_close(g);
	} else if (YAJL_IS_ARRAY(v)) {
		yajl_gen_array_open(g);
		for (size_t i = 0; i < v->u.array.len; i++)
			gen(g, v->u.array.values[i]);
		yajl_gen_array_close(g);
	} else if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v)) {
		yajl_gen_bool(g, YAJL_IS_TRUE(v));
	} else {
		yajl_gen_null(g);
	}
}

/* The tree written out again: a text for comparing two trees. */
static char *written(yajl_val tree)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	gen(g, tree);
	const unsigned char *out;
	size_t len;
	yajl_gen_get_buf(g, &out, &len);
	char *s = xstrndup((const char *)out, len);
	yajl_gen_free(g);
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct jsonparse_limits limits = {MAX_DEPTH, MAX_TOP};
	char err[256];
	yajl_val tree;
	enum jsonparse_status got =
		jsonparse((const char *)data, size, &limits, &tree, err, sizeof(err));
	enum jsonparse_status want = ref_parse(data, size);
	if (got != want) {
		fprintf(stderr, "jsonparse says %d (%s), the reference %d, on %zu bytes: %.*s\n",
			got, got == JSONPARSE_OK ? "" : err, want, size, (int)size,
			(const char *)data);
		abort();
	}
	if (got != JSONPARSE_OK)
		return 0;
	char *once = written(tree);
	yajl_tree_free(tree);
	if (jsonparse(once, strlen(once), &limits, &tree, err, sizeof(err)) != JSONPARSE_OK) {
		fprintf(stderr, "written back, not accepted again: %s\n%s\n", err, once);
		abort();
	}
	char *twice = written(tree);
	yajl_tree_free(tree);
	if (strcmp(once, twice) != 0) {
		fprintf(stderr, "written back differently:\n%s\n%s\n", once, twice);
		abort();
	}
	free(once);
	free(twice);
	return 0;
}
