/*
 * Unit tests for common/log.c's quotas: log_limited() writes the first line
 * of a burst, holds back the rest until its interval has passed (moved back
 * by hand, so that no test waits on the clock), then says
 * how many it held; a line below the level neither writes nor spends the
 * quota. stderr is redirected into a temporary file and read back.
 */
#include "log.h"
#include "unit.h"

#include <stdlib.h>
#include <unistd.h>

static int saved_stderr = -1;
static FILE *captured;

static void capture(void)
{
	fflush(stderr);
	captured = tmpfile();
	saved_stderr = dup(STDERR_FILENO);
	dup2(fileno(captured), STDERR_FILENO);
}

/* The lines written since capture(), in one string (static). */
static const char *release(void)
{
	static char text[8192];
	fflush(stderr);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	rewind(captured);
	size_t n = fread(text, 1, sizeof(text) - 1, captured);
	text[n] = '\0';
	fclose(captured);
	return text;
}

static int count(const char *text, const char *what)
{
	int n = 0;
	for (const char *p = strstr(text, what); p; p = strstr(p + 1, what))
		n++;
	return n;
}

UNIT_TEST(a_burst_writes_one_line_then_says_how_many_were_held)
{
	struct log_quota q = {0};
	capture();
	for (int i = 0; i < 5; i++)
		log_limited(&q, 60000, LOG_LEVEL_ERROR, "refused: try %d", i);
	const char *text = release();
	UNIT_CHECK(count(text, "refused: try") == 1, "one line of five, got: %s", text);
	UNIT_CHECK(strstr(text, "refused: try 0\n") != NULL, "the first, as it was: %s", text);
	UNIT_CHECK(strstr(text, "held") == NULL, "nothing held before it: %s", text);

	q.at_ms -= 60000; /* the interval has passed */
	capture();
	log_limited(&q, 60000, LOG_LEVEL_ERROR, "refused: try %d", 5);
	log_limited(&q, 60000, LOG_LEVEL_ERROR, "refused: try %d", 6);
	text = release();
	UNIT_CHECK(count(text, "refused: try") == 1, "one line after the interval, got: %s", text);
	UNIT_CHECK(strstr(text, "refused: try 5 (and 4 more such line(s) since the last one)") !=
			   NULL,
		   "the four held back are counted: %s", text);
}

UNIT_TEST(a_line_below_the_level_spends_nothing)
{
	struct log_quota q = {0};
	log_set_level(LOG_LEVEL_WARN);
	capture();
	log_limited(&q, 60000, LOG_LEVEL_INFO, "quiet");
	log_limited(&q, 60000, LOG_LEVEL_WARN, "loud");
	const char *text = release();
	log_set_level(LOG_LEVEL_INFO);
	UNIT_CHECK(strstr(text, "quiet") == NULL, "below the level: %s", text);
	UNIT_CHECK(count(text, "loud") == 1 && strstr(text, "held") == NULL,
		   "the first line at the level is written, with nothing held: %s", text);
}

UNIT_TEST(a_long_line_is_cut_not_overrun)
{
	struct log_quota q = {0};
	static char big[3000];
	memset(big, 'x', sizeof(big) - 1);
	capture();
	log_limited(&q, 1000, LOG_LEVEL_ERROR, "%s", big);
	const char *text = release();
	UNIT_CHECK(count(text, "\n") == 1, "one line: %zu bytes", strlen(text));
	UNIT_CHECK(strlen(text) < sizeof(big), "cut to the line's size: %zu", strlen(text));
}

int main(void)
{
	UNIT_RUN(a_burst_writes_one_line_then_says_how_many_were_held);
	UNIT_RUN(a_line_below_the_level_spends_nothing);
	UNIT_RUN(a_long_line_is_cut_not_overrun);
	return UNIT_DONE();
}
