/*
 * json_check: reading a generated JSON body back in the format tests, by
 * dotted paths with array indexes ("embeds.0.fields.1.value"). The body
 * is parsed with common/jsonparse, the strictest reader reghook has (no
 * duplicate keys, well-formed UTF-8 only), so a body that passes here
 * passes any consumer's parser. Header only.
 */
#ifndef REGHOOK_JSON_CHECK_H
#define REGHOOK_JSON_CHECK_H

#include "jsonparse.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

/* Parses text strictly; NULL, with a failure recorded, if it is not JSON. */
#define JSON_PARSE(text, len) json_check_parse(__FILE__, __LINE__, (text), (len))

static inline yajl_val json_check_parse(const char *file, int line, const char *text, size_t len)
{
	const struct jsonparse_limits lim = {.max_depth = 64};
	yajl_val tree = NULL;
	char err[256];
	if (jsonparse(text, len, &lim, &tree, err, sizeof(err)) != JSONPARSE_OK) {
		unit_fail(file, line, "not JSON (%s): %.300s", err, text ? text : "(null)");
		return NULL;
	}
	return tree;
}

/* The value at path, or NULL. */
static inline yajl_val jpath(yajl_val v, const char *path)
{
	char part[128];
	while (v && *path) {
		size_t n = strcspn(path, ".");
		snprintf(part, sizeof(part), "%.*s", (int)n, path);
		path += n + (path[n] == '.');
		if (YAJL_IS_ARRAY(v)) {
			size_t i = strtoul(part, NULL, 10);
			v = i < v->u.array.len ? v->u.array.values[i] : NULL;
		} else if (YAJL_IS_OBJECT(v)) {
			yajl_val found = NULL;
			for (size_t i = 0; i < v->u.object.len && !found; i++)
				if (strcmp(v->u.object.keys[i], part) == 0)
					found = v->u.object.values[i];
			v = found;
		} else {
			v = NULL;
		}
	}
	return v;
}

/* The string at path, or NULL when it is absent or not a string. */
static inline const char *jstr(yajl_val v, const char *path)
{
	yajl_val s = jpath(v, path);
	return s && YAJL_IS_STRING(s) ? YAJL_GET_STRING(s) : NULL;
}

#define CHECK_JSTR(tree, path, want) UNIT_CHECK_STR(jstr((tree), (path)), (want))

#define CHECK_JINT(tree, path, want)                                                               \
	do {                                                                                       \
		yajl_val v_ = jpath((tree), (path));                                               \
		UNIT_CHECK(v_ &&YAJL_IS_INTEGER(v_) && YAJL_GET_INTEGER(v_) == (want),             \
			   "%s: not the integer %lld", (path), (long long)(want));                 \
	} while (0)

#define CHECK_JNULL(tree, path)                                                                    \
	do {                                                                                       \
		yajl_val v_ = jpath((tree), (path));                                               \
		UNIT_CHECK(v_ &&YAJL_IS_NULL(v_), "%s: not null", (path));                         \
	} while (0)

#define CHECK_JABSENT(tree, path) UNIT_CHECK(jpath((tree), (path)) == NULL, "%s: present", (path))

/* The object at path has exactly the keys want (NULL-terminated), in that order. */
#define CHECK_JKEYS(tree, path, ...)                                                               \
	json_check_keys(__FILE__, __LINE__, jpath((tree), (path)), (path),                         \
			(const char *const[]){__VA_ARGS__, NULL})

static inline void json_check_keys(const char *file, int line, yajl_val obj, const char *what,
				   const char *const *want)
{
	if (!obj || !YAJL_IS_OBJECT(obj)) {
		unit_fail(file, line, "%s: not an object", what);
		return;
	}
	size_t n = 0;
	for (; want[n]; n++) {
		const char *got = n < obj->u.object.len ? obj->u.object.keys[n] : "(none)";
		if (strcmp(got, want[n]) != 0)
			unit_fail(file, line, "%s key %zu is \"%s\", want \"%s\"", what, n, got,
				  want[n]);
	}
	if (obj->u.object.len != n)
		unit_fail(file, line, "%s has %zu keys, want %zu", what, obj->u.object.len, n);
}

#endif
