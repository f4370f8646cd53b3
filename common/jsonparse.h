/*
 * jsonparse: strict, bounded JSON (RFC 8259) into a yajl tree, in one pass
 * of yajl's event parser. Every body a client sends goes through here, so
 * the grammar that decides what is refused is the grammar that builds the
 * tree: no pre-scan that could read the text differently from the parser.
 *
 * What yajl alone would let through is refused as it streams by: comments
 * (yajl_tree_parse allows them), the whitespace JSON does not have (\v,
 * \f), containers nested deeper than max_depth (before the node exists, so
 * no deep tree is ever built or freed), strings that are not well-formed
 * UTF-8 or hold \u0000 or an unpaired surrogate escape (yajl would cut,
 * replace or re-encode them, so the text stored would not be the text
 * sent), and duplicate keys in one object (readers disagree on which one
 * wins), and numbers longer than JSONPARSE_NUMBER_MAX characters or with an
 * exponent beyond +-JSONPARSE_EXPONENT_MAX (stored exactly, 1e131071 is
 * written back as 131,072 digits). Arrays that are values of the top-level
 * object are counted as they grow, so an oversized envelope is refused
 * without building it.
 *
 * The tree is yajl's own type: read it with yajl_tree_get and free it
 * with yajl_tree_free.
 */
#ifndef REGHOOK_JSONPARSE_H
#define REGHOOK_JSONPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <yajl/yajl_tree.h>

#define JSONPARSE_NUMBER_MAX 40
#define JSONPARSE_EXPONENT_MAX 20

struct jsonparse_limits {
	int max_depth;		 /* objects and arrays nested deeper are refused */
	size_t max_top_elements; /* of an array valued in the top-level object; 0: any */
};

enum jsonparse_status {
	JSONPARSE_OK,
	JSONPARSE_BAD,	    /* not JSON, or beyond what the limits and rules allow */
	JSONPARSE_TOO_MANY, /* an array of the top-level object past max_top_elements */
};

/*
 * Parses len bytes of text (no NUL terminator needed). On JSONPARSE_OK
 * *out is the tree, owned by the caller; otherwise *out is NULL and err
 * says what is wrong and at which byte.
 */
enum jsonparse_status jsonparse(const char *text, size_t len, const struct jsonparse_limits *lim,
				yajl_val *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Whether s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, at most U+10FFFF); *bad is the offset of the first bad byte. */
bool jsonparse_utf8_ok(const unsigned char *s, size_t n, size_t *bad);

#endif
