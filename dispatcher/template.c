/*
 * template: see template.h.
 *
 * One pass over the template's text serves both the check and the
 * rendering (with no event, it only checks), so the two cannot disagree
 * on what a variable is. The pass runs only on text that jsonparse has
 * accepted, so it can walk the raw JSON simply: strings are found by their
 * quotes (a backslash takes the next byte with it), and whether a string
 * is a key is told by what came before it (an object's '{' or ',').
 */
#include "template.h"
#include "jsonparse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const template_var_names[] = {
	"namespace",   "name",	       "repository", "tag",	   "digest", "action",
	"actor",       "timestamp",    "pushed_at",  "media_type", "size",   "event_id",
	"delivery_id", "registry_url", "repo_url",   NULL,
};

/* A variable's value: a string (borrowed or in own), a number, or null. */
struct value {
	enum { V_NULL, V_STRING, V_NUMBER } type;
	const char *s;
	long long n;
	struct buf own;
};

static void lookup(const struct payload_event *ev, const char *name, size_t len, struct value *v)
{
	memset(v, 0, sizeof(*v));
#define IS(lit) (len == sizeof(lit) - 1 && memcmp(name, lit, len) == 0)
#define STR(x) (v->type = (x) ? V_STRING : V_NULL, v->s = (x))
	if (IS("namespace"))
		STR(ev->namespace_);
	else if (IS("name"))
		STR(ev->name);
	else if (IS("repository"))
		STR(ev->repository);
	else if (IS("tag"))
		STR(ev->tag);
	else if (IS("digest"))
		STR(ev->digest);
	else if (IS("action"))
		STR(ev->action);
	else if (IS("actor"))
		STR(ev->actor && *ev->actor ? ev->actor : NULL);
	else if (IS("media_type"))
		STR(ev->media_type);
	else if (IS("event_id"))
		STR(ev->event_id);
	else if (IS("delivery_id"))
		STR(ev->delivery_id);
	else if (IS("pushed_at"))
		*v = (struct value){.type = V_NUMBER, .n = ev->occurred_at};
	else if (IS("size") && ev->has_size)
		*v = (struct value){.type = V_NUMBER, .n = ev->size};
	else if (IS("timestamp")) {
		char when[PAYLOAD_TIME_MAX];
		payload_time(ev, when);
		buf_puts(&v->own, when);
		STR(v->own.data);
	} else if ((IS("registry_url") && payload_registry_base(ev, &v->own)) ||
		   (IS("repo_url") && payload_repo_url(ev, &v->own)))
		STR(v->own.data);
#undef IS
#undef STR
}

static bool known(const char *name, size_t len)
{
	for (const char *const *n = template_var_names; *n; n++)
		if (strlen(*n) == len && memcmp(*n, name, len) == 0)
			return true;
	return false;
}

struct pass {
	const char *text;
	size_t len;
	const struct payload_event *ev; /* borrowed; NULL: check only */
	struct buf *out;		/* borrowed; NULL when checking */
	char *err;
	size_t errlen;
};

/* "line L, column C: " of byte offset at, columns counted in characters. */
static void where(const struct pass *p, size_t at, char *out, size_t outlen)
{
	size_t line = 1, col = 1;
	for (size_t i = 0; i < at && i < p->len; i++) {
		unsigned char c = (unsigned char)p->text[i];
		if (c == '\n') {
			line++;
			col = 1;
		} else if ((c & 0xc0) != 0x80) {
			col++;
		}
	}
	snprintf(out, outlen, "line %zu, column %zu: ", line, col);
}

static bool fail_at(const struct pass *p, size_t at, const char *what, const char *name,
		    size_t namelen)
{
	char pos[64];
	where(p, at, pos, sizeof(pos));
	if (name)
		snprintf(p->err, p->errlen, "%s%s {{%.*s}}", pos, what,
			 (int)(namelen > 64 ? 64 : namelen), name);
	else
		snprintf(p->err, p->errlen, "%s%s", pos, what);
	return false;
}

/*
 * The variable whose "{{" is at s[at]: on success *name, *namelen (spaces
 * trimmed) and *end (just past its "}}").
 */
static bool reference(const struct pass *p, const char *s, size_t len, size_t at, size_t base,
		      const char **name, size_t *namelen, size_t *end)
{
	const char *close = NULL;
	for (size_t i = at + 2; i + 1 < len && !close; i++)
		if (s[i] == '}' && s[i + 1] == '}')
			close = s + i;
	if (!close)
		return fail_at(p, base + at, "{{ is not closed by }} in this string", NULL, 0);
	const char *a = s + at + 2, *b = close;
	while (a < b && *a == ' ')
		a++;
	while (b > a && b[-1] == ' ')
		b--;
	*name = a;
	*namelen = (size_t)(b - a);
	*end = (size_t)(close - s) + 2;
	if (*namelen == 0)
		return fail_at(p, base + at, "{{}} names no variable", NULL, 0);
	if (!known(a, *namelen))
		return fail_at(p, base + at, "unknown variable", a, *namelen);
	return true;
}

/* Writes v's text, JSON-escaped, without quotes (inside a longer string). */
static void put_text(struct buf *out, const struct value *v)
{
	if (v->type == V_NUMBER) {
		buf_printf(out, "%lld", v->n);
	} else if (v->type == V_STRING) {
		struct buf q = BUF_INIT;
		buf_json_str(&q, v->s, strlen(v->s));
		buf_append(out, q.data + 1, q.len - 2);
		buf_free(&q);
	}
}

static void put_value(struct buf *out, const struct value *v)
{
	if (v->type == V_NUMBER)
		buf_printf(out, "%lld", v->n);
	else if (v->type == V_STRING)
		buf_json_str(out, v->s, strlen(v->s));
	else
		buf_puts(out, "null");
}

/* A string value's content s[0..len), found at byte base of the text (its opening quote). */
static bool string_value(struct pass *p, const char *s, size_t len, size_t base)
{
	const char *name;
	size_t namelen, end;
	struct value v;
	base++;
	/* Exactly one variable: its JSON value, quotes and all. */
	if (len >= 4 && s[0] == '{' && s[1] == '{' && s[len - 2] == '}' && s[len - 1] == '}' &&
	    !memchr(s + 2, '{', len - 4) && !memchr(s + 2, '}', len - 4)) {
		if (!reference(p, s, len, 0, base, &name, &namelen, &end))
			return false;
		if (p->out) {
			lookup(p->ev, name, namelen, &v);
			put_value(p->out, &v);
			buf_free(&v.own);
		}
		return true;
	}
	if (p->out)
		buf_putc(p->out, '"');
	for (size_t i = 0; i < len;) {
		if (s[i] == '{' && i + 1 < len && s[i + 1] == '{') {
			if (!reference(p, s, len, i, base, &name, &namelen, &end))
				return false;
			if (p->out) {
				lookup(p->ev, name, namelen, &v);
				put_text(p->out, &v);
				buf_free(&v.own);
			}
			i = end;
			continue;
		}
		/* A backslash escape is copied whole: "\\{{" is a backslash, then a variable. */
		size_t n = s[i] == '\\' ? 2 : 1;
		if (p->out)
			buf_append(p->out, s + i, n);
		i += n;
	}
	if (p->out)
		buf_putc(p->out, '"');
	return true;
}

/* The pass over text that jsonparse accepted. */
static bool walk(struct pass *p)
{
	bool in_object[TEMPLATE_MAX_DEPTH + 2] = {false};
	int depth = 0;
	char last = 0; /* the last of { [ , : seen, 0 at the start */
	for (size_t i = 0; i < p->len;) {
		char c = p->text[i];
		if (c != '"') {
			if (c == '{' || c == '[') {
				if (depth <= TEMPLATE_MAX_DEPTH)
					in_object[++depth] = c == '{';
				last = c;
			} else if (c == '}' || c == ']') {
				depth--;
			} else if (c == ',' || c == ':') {
				last = c;
			}
			if (p->out)
				buf_putc(p->out, c);
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < p->len && p->text[j] != '"')
			j += p->text[j] == '\\' ? 2 : 1;
		const char *s = p->text + i + 1;
		size_t len = j - i - 1;
		bool key = depth > 0 && in_object[depth] && (last == '{' || last == ',');
		if (key) {
			const char *brace = memmem(s, len, "{{", 2);
			if (brace)
				return fail_at(p, (size_t)(brace - p->text),
					       "variables are not expanded in object keys", NULL,
					       0);
			if (p->out)
				buf_append(p->out, p->text + i, len + 2);
		} else if (!string_value(p, s, len, i)) {
			return false;
		}
		last = 0;
		i = j + 1;
	}
	return true;
}

/* jsonparse's message ends "at byte N": that place, as a line and column. */
static void json_error(struct pass *p, const char *msg)
{
	const char *at = NULL;
	for (const char *s = strstr(msg, " at byte "); s; s = strstr(s + 1, " at byte "))
		at = s;
	if (!at) {
		snprintf(p->err, p->errlen, "%s", msg);
		return;
	}
	size_t off = strtoul(at + 9, NULL, 10);
	size_t cut = (size_t)(at - msg);
	/* "in the object ending at byte N": N is past its '}'. */
	bool ending = cut >= 7 && memcmp(at - 7, " ending", 7) == 0;
	if (ending) {
		cut -= 7;
		off -= off > 0;
	}
	/* yajl counts the bytes of its last call only: at the end of the text, that is not where.
	 */
	if (strstr(msg, "premature EOF"))
		off = p->len;
	char pos[64];
	where(p, off, pos, sizeof(pos));
	snprintf(p->err, p->errlen, "%s%.*s%s", pos, (int)cut, msg,
		 ending ? " that ends here" : "");
}

static bool run(struct pass *p)
{
	if (p->len > TEMPLATE_MAX_BYTES) {
		snprintf(p->err, p->errlen,
			 "the template is %zu bytes, over the limit of %d (16 KiB)", p->len,
			 TEMPLATE_MAX_BYTES);
		return false;
	}
	const struct jsonparse_limits lim = {.max_depth = TEMPLATE_MAX_DEPTH};
	yajl_val tree = NULL;
	char msg[256];
	if (jsonparse(p->text, p->len, &lim, &tree, msg, sizeof(msg)) != JSONPARSE_OK) {
		json_error(p, msg);
		return false;
	}
	yajl_tree_free(tree);
	return walk(p);
}

bool template_check(const char *text, size_t len, char *err, size_t errlen)
{
	struct pass p = {text, len, NULL, NULL, err, errlen};
	return run(&p);
}

bool template_render(const char *text, size_t len, const struct payload_event *ev, struct buf *out)
{
	char err[256];
	if (!payload_action_ok(ev))
		return false;
	size_t was = out->len;
	struct pass p = {text, len, ev, out, err, sizeof(err)};
	if (run(&p))
		return true;
	/* The walk stops at its first error, part of the output written: take it back. */
	out->len = was;
	if (out->data)
		out->data[was] = '\0';
	return false;
}
