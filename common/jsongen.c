/*
 * jsongen: see jsongen.h.
 */
#include "jsongen.h"

#include <string.h>

static void status(struct jsongen *j, yajl_gen_status st)
{
	if (st != yajl_gen_status_ok)
		j->ok = false;
}

bool jsongen_init(struct jsongen *j)
{
	j->g = yajl_gen_alloc(NULL);
	j->ok = j->g != NULL;
	if (j->g)
		yajl_gen_config(j->g, yajl_gen_validate_utf8, 1);
	return j->ok;
}

bool jsongen_finish(struct jsongen *j, struct buf *out)
{
	if (!j->g)
		return false;
	if (j->ok) {
		const unsigned char *text;
		size_t len;
		j->ok = yajl_gen_get_buf(j->g, &text, &len) == yajl_gen_status_ok;
		if (j->ok)
			buf_append(out, text, len);
	}
	yajl_gen_free(j->g);
	j->g = NULL;
	return j->ok;
}

void jsongen_strn(struct jsongen *j, const char *s, size_t len)
{
	if (!j->ok)
		return;
	status(j, s ? yajl_gen_string(j->g, (const unsigned char *)s, len) : yajl_gen_null(j->g));
}

void jsongen_str(struct jsongen *j, const char *s)
{
	jsongen_strn(j, s, s ? strlen(s) : 0);
}

void jsongen_int(struct jsongen *j, long long value)
{
	if (j->ok)
		status(j, yajl_gen_integer(j->g, value));
}

void jsongen_bool(struct jsongen *j, bool value)
{
	if (j->ok)
		status(j, yajl_gen_bool(j->g, value));
}

void jsongen_null(struct jsongen *j)
{
	if (j->ok)
		status(j, yajl_gen_null(j->g));
}

void jsongen_map_open(struct jsongen *j, const char *key)
{
	if (key)
		jsongen_str(j, key);
	if (j->ok)
		status(j, yajl_gen_map_open(j->g));
}

void jsongen_map_close(struct jsongen *j)
{
	if (j->ok)
		status(j, yajl_gen_map_close(j->g));
}

void jsongen_array_open(struct jsongen *j, const char *key)
{
	if (key)
		jsongen_str(j, key);
	if (j->ok)
		status(j, yajl_gen_array_open(j->g));
}

void jsongen_array_close(struct jsongen *j)
{
	if (j->ok)
		status(j, yajl_gen_array_close(j->g));
}

void jsongen_kv_str(struct jsongen *j, const char *key, const char *value)
{
	jsongen_str(j, key);
	jsongen_str(j, value);
}

void jsongen_kv_str_or_empty(struct jsongen *j, const char *key, const char *value)
{
	jsongen_kv_str(j, key, value ? value : "");
}

void jsongen_kv_int(struct jsongen *j, const char *key, long long value)
{
	jsongen_str(j, key);
	jsongen_int(j, value);
}

void jsongen_kv_bool(struct jsongen *j, const char *key, bool value)
{
	jsongen_str(j, key);
	jsongen_bool(j, value);
}
