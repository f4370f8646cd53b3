/*
 * Unit tests of common/buf.c: JSON string escaping keeps valid UTF-8 and
 * replaces what is not, so that any bytes (a Latin-1 response header, say)
 * make valid JSON text; text made printable loses its control characters
 * and stray bytes and keeps the rest.
 */
#include "buf.h"
#include "unit.h"

#include <stdlib.h>

static void check(const char *in, size_t len, const char *want)
{
	struct buf b = BUF_INIT;
	buf_json_str(&b, in, len);
	UNIT_CHECK(strcmp(b.data, want) == 0, "got %s, want %s", b.data, want);
	buf_free(&b);
}

UNIT_TEST(json_escapes)
{
	check("a\"b\\c\n\t\x01", 8, "\"a\\\"b\\\\c\\n\\t\\u0001\"");
	check("", 0, "\"\"");
}

UNIT_TEST(json_utf8)
{
	check("caf\xc3\xa9", 5, "\"caf\xc3\xa9\"");	       /* valid: kept */
	check("\xf0\x9f\x90\xb3", 4, "\"\xf0\x9f\x90\xb3\"");  /* 4 bytes */
	check("caf\xe9", 4, "\"caf\\ufffd\"");		       /* Latin-1 */
	check("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");	       /* overlong */
	check("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""); /* surrogate */
	check("\xe2\x82", 2, "\"\\ufffd\\ufffd\"");	       /* truncated */
}

static void check_printable(const char *in, const char *want)
{
	char *s = xstrdup(in);
	size_t n = text_printable(s);
	UNIT_CHECK(strcmp(s, want) == 0 && n == strlen(want), "%s: got %s, want %s", in, s, want);
	free(s);
}

UNIT_TEST(printable_text)
{
	check_printable("plain caf\xc3\xa9 \xf0\x9f\x90\xb3", "plain caf\xc3\xa9 \xf0\x9f\x90\xb3");
	check_printable("a\nb\r\x1b[2J\x7f", "a?b??[2J?"); /* C0, DEL */
	check_printable("\xc2\x9b"
			"1m\xc2\x85\xc2\xa0",
			"?1m?\xc2\xa0");		  /* C1; NBSP kept */
	check_printable("caf\xe9!", "caf?!");		  /* Latin-1 */
	check_printable("\xc0\xaf\xed\xa0\x80", "?????"); /* overlong, surrogate */
	check_printable("cut \xe2\x82", "cut ??");	  /* truncated */
	check_printable("", "");
}

UNIT_TEST(printf_and_steal)
{
	struct buf b = BUF_INIT;
	buf_printf(&b, "%d-%s", 42, "x");
	buf_puts(&b, "!");
	UNIT_CHECK(b.len == 5 && strcmp(b.data, "42-x!") == 0, "%s", b.data);
	char *s = buf_steal(&b);
	UNIT_CHECK(b.data == NULL && b.len == 0, "not emptied");
	UNIT_CHECK(strcmp(s, "42-x!") == 0, "%s", s);
	free(s);
}

int main(void)
{
	UNIT_RUN(json_escapes);
	UNIT_RUN(json_utf8);
	UNIT_RUN(printable_text);
	UNIT_RUN(printf_and_steal);
	return UNIT_DONE();
}
