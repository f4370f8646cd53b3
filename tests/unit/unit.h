/*
 * unit: the smallest test harness that does the job, header only.
 *
 * A test file defines its tests with UNIT_TEST(name) { ... UNIT_CHECK(...); },
 * and its main() calls UNIT_RUN(name) for each, then returns UNIT_DONE().
 * A failed check records file:line and a message and the test goes on, so
 * one run shows every broken expectation (all on stderr); the summary line
 * of a test names its first failure:
 *
 *	ok - parses_durations
 *	FAIL - parses_sizes: test_conf.c:42: "1MiB" gave 1000, want 1048576
 *	1 passed, 1 failed
 *
 * The counters are file-scope statics: each test binary is one translation
 * unit and runs its tests one after another, so nothing is shared.
 */
#ifndef REGHOOK_UNIT_H
#define REGHOOK_UNIT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;
static int unit_failures;	  /* in the test now running */
static char unit_first_fail[512]; /* its first failure, for the summary line */

static inline void unit_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline void unit_fail(const char *file, int line, const char *fmt, ...)
{
	char msg[448];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	const char *base = strrchr(file, '/');
	base = base ? base + 1 : file;
	if (unit_failures++ == 0)
		snprintf(unit_first_fail, sizeof(unit_first_fail), "%s:%d: %s", base, line, msg);
	fprintf(stderr, "  %s:%d: %s\n", base, line, msg);
}

static inline void unit_run(const char *name, void (*fn)(void))
{
	unit_failures = 0;
	unit_first_fail[0] = '\0';
	fn();
	if (unit_failures == 0) {
		unit_passed++;
		printf("ok - %s\n", name);
	} else {
		unit_failed++;
		printf("FAIL - %s: %s\n", name, unit_first_fail);
	}
	fflush(stdout);
}

static inline int unit_done(void)
{
	printf("%d passed, %d failed\n", unit_passed, unit_failed);
	return unit_failed ? 1 : 0;
}

/* Strings equal, NULL only equal to NULL. */
static inline bool unit_streq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

#define UNIT_TEST(name) static void name(void)

/* UNIT_CHECK(cond, fmt, ...): the message is a printf format and its arguments. */
#define UNIT_CHECK(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond))                                                                       \
			unit_fail(__FILE__, __LINE__, __VA_ARGS__);                                \
	} while (0)

/* The common case of comparing a string with what it should be. */
#define UNIT_CHECK_STR(got, want)                                                                  \
	do {                                                                                       \
		const char *unit_g_ = (got), *unit_w_ = (want);                                    \
		if (!unit_streq(unit_g_, unit_w_))                                                 \
			unit_fail(__FILE__, __LINE__, "%s is \"%s\", want \"%s\"", #got,           \
				  unit_g_ ? unit_g_ : "(null)", unit_w_ ? unit_w_ : "(null)");     \
	} while (0)

#define UNIT_RUN(name) unit_run(#name, name)
#define UNIT_DONE() unit_done()

#endif
