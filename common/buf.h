/*
 * buf: a growable byte buffer, always NUL-terminated so that its contents
 * can be handed to C string functions when they are text. Allocation
 * failure is fatal: a daemon out of memory has no better move.
 */
#ifndef REGHOOK_BUF_H
#define REGHOOK_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data; /* owned; NULL until the first append */
	size_t len;
	size_t cap;
};

#define BUF_INIT                                                                                   \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}

void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal, quotes included; invalid UTF-8 becomes U+FFFD. */
void buf_json_str(struct buf *b, const char *s, size_t len);
void buf_reset(struct buf *b);

/* Length of the well-formed UTF-8 sequence at s (its first byte >= 0x80)
 * within avail bytes, or 0: no overlong forms, surrogates or code points
 * past U+10FFFF (RFC 3629). */
size_t utf8_sequence(const char *s, size_t avail);
/* Makes text safe to print to a terminal or a journal, in place: each
 * control character (C0, DEL, C1) and each byte that is not part of
 * well-formed UTF-8 becomes '?'. Returns the new length. */
size_t text_printable(char *s);
/* Hands the contents to the caller (who frees them) and empties b. */
char *buf_steal(struct buf *b);
void buf_free(struct buf *b);
const char *buf_cstr(struct buf *b);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
