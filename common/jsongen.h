/*
 * jsongen: building JSON documents with yajl's generator, without checking
 * a status after every call. The first failed call (a string that is not
 * valid UTF-8, say) is remembered and turns every later call into a no-op:
 * after an invalid string yajl's generator is mid-map, and carrying on
 * would only produce a second, more confusing error. jsongen_finish()
 * reports whether the whole document was built.
 *
 * Strings are always checked as UTF-8, because the consumers of what is
 * built here parse it with strict JSON parsers.
 */
#ifndef REGHOOK_JSONGEN_H
#define REGHOOK_JSONGEN_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <yajl/yajl_gen.h>

struct jsongen {
	yajl_gen g; /* owned */
	bool ok;    /* false from the first failed call on */
};

/* Starts a document; false (and nothing to free) if yajl cannot allocate. */
bool jsongen_init(struct jsongen *j) __attribute__((warn_unused_result));
/* Appends the document to out if every call succeeded, frees the generator, says which. */
bool jsongen_finish(struct jsongen *j, struct buf *out) __attribute__((warn_unused_result));

/* A string of len bytes; NULL writes null. */
void jsongen_strn(struct jsongen *j, const char *s, size_t len);
/* A NUL-terminated string; NULL writes null. */
void jsongen_str(struct jsongen *j, const char *s);
void jsongen_int(struct jsongen *j, long long value);
void jsongen_bool(struct jsongen *j, bool value);
void jsongen_null(struct jsongen *j);
/* Opens an object or array, after key when key is not NULL. */
void jsongen_map_open(struct jsongen *j, const char *key);
void jsongen_map_close(struct jsongen *j);
void jsongen_array_open(struct jsongen *j, const char *key);
void jsongen_array_close(struct jsongen *j);

/* "key": value pairs. kv_str writes NULL as null; kv_str_or_empty as "". */
void jsongen_kv_str(struct jsongen *j, const char *key, const char *value);
void jsongen_kv_str_or_empty(struct jsongen *j, const char *key, const char *value);
void jsongen_kv_int(struct jsongen *j, const char *key, long long value);
void jsongen_kv_bool(struct jsongen *j, const char *key, bool value);

#endif
