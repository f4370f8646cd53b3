/*
 * Unit tests for dispatcher/retry.c: the schedule with its jitter bounds,
 * Retry-After as delta-seconds and as each HTTP-date form, clamping to
 * [scheduled, 2 x scheduled] (and to [1 s, 2 s] when nothing was
 * scheduled), and which statuses disable a webhook. Epoch values of the
 * dates were computed independently with Python's calendar.timegm.
 */
#include "retry.h"
#include "unit.h"

#include <limits.h>
#include <math.h>

/* The default retry_schedule: 0,5s,5m,30m,2h,5h,10h,10h. */
static const long long schedule[] = {0,	      5000,	300000,	  1800000,
				     7200000, 18000000, 36000000, 36000000};
#define STEPS ((int)(sizeof(schedule) / sizeof(schedule[0])))

UNIT_TEST(schedule_without_jitter)
{
	/* jitter01 = 0.5 is the middle of the band: the scheduled delay itself. */
	for (int attempt = 1; attempt <= STEPS; attempt++) {
		long long got = retry_delay_ms(schedule, STEPS, attempt, 0.5);
		UNIT_CHECK(got == schedule[attempt - 1], "attempt %d: %lld, want %lld", attempt,
			   got, schedule[attempt - 1]);
	}
	/* Past the end the last entry repeats. */
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, 9, 0.5) == 36000000, "attempt 9");
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, 1000, 0.5) == 36000000, "attempt 1000");
	/* Attempt numbers below 1 are read as 1. */
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, 0, 0.5) == 0, "attempt 0");
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, -3, 0.5) == 0, "attempt -3");
}

UNIT_TEST(jitter_band)
{
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, 2, 0.0) == 4000, "5 s at jitter 0: %lld",
		   retry_delay_ms(schedule, STEPS, 2, 0.0));
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, 2, 0.25) == 4500, "5 s at jitter 0.25: %lld",
		   retry_delay_ms(schedule, STEPS, 2, 0.25));
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, 2, 0.999999) == 6000, "5 s at jitter ~1: %lld",
		   retry_delay_ms(schedule, STEPS, 2, 0.999999));
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, 8, 0.0) == 28800000, "10 h at jitter 0");
	/* Every draw stays within +-20%. */
	for (int i = 0; i < 1000; i++) {
		double j = i / 1000.0;
		long long got = retry_delay_ms(schedule, STEPS, 3, j);
		UNIT_CHECK(got >= 240000 && got < 360000, "5 m at jitter %g: %lld", j, got);
	}
	/* Zero stays zero: the first attempt is immediate whatever the draw. */
	UNIT_CHECK(retry_delay_ms(schedule, STEPS, 1, 0.9) == 0, "attempt 1 jittered");
}

UNIT_TEST(odd_inputs)
{
	static const long long one[] = {1000};
	static const long long neg[] = {-5000};
	static const long long huge[] = {LLONG_MAX};
	UNIT_CHECK(retry_delay_ms(NULL, 0, 3, 0.5) == 0, "no schedule");
	UNIT_CHECK(retry_delay_ms(one, 0, 1, 0.5) == 0, "zero steps");
	UNIT_CHECK(retry_delay_ms(one, 1, 5, 0.5) == 1000, "one step repeats");
	UNIT_CHECK(retry_delay_ms(neg, 1, 1, 0.5) == 0, "negative delay");
	UNIT_CHECK(retry_delay_ms(one, 1, 1, -1.0) == 800, "jitter below 0 clamps");
	UNIT_CHECK(retry_delay_ms(one, 1, 1, 7.0) == 1200, "jitter above 1 clamps");
	UNIT_CHECK(retry_delay_ms(one, 1, 1, NAN) == 800, "NaN jitter");
	UNIT_CHECK(retry_delay_ms(huge, 1, 1, 0.9) == LLONG_MAX, "overflow saturates");
}

UNIT_TEST(retry_after_absent_or_bad)
{
	static const char *const bad[] = {
		"",
		"   ",
		"-5",
		"5s",
		"1.5",
		"soon",
		"Wed, 21 Oct 2015 07:28:00", /* no GMT */
		"Wed, 21 Oct 2015 07:28:00 GMT junk",
		"Wed, 32 Oct 2015 07:28:00 GMT", /* no such day */
		"Wed, 29 Feb 2100 07:28:00 GMT", /* 2100 is not a leap year */
		"Wed, 21 Foo 2015 07:28:00 GMT",
		"Wed, 21 Oct 2015 24:00:00 GMT",
		"Wed, 21 Oct 1969 07:28:00 GMT",
		"a very long header that is longer than any date or number could ever be",
	};
	UNIT_CHECK(retry_after_clamp_ms(5000, NULL, 0) == 5000, "absent header");
	UNIT_CHECK(retry_after_clamp_ms(0, NULL, 0) == 0, "absent header, nothing scheduled");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long long got = retry_after_clamp_ms(5000, bad[i], 1445412480);
		UNIT_CHECK(got == 5000, "'%s' gave %lld, want the scheduled 5000", bad[i], got);
	}
}

UNIT_TEST(retry_after_seconds)
{
	static const struct {
		long long scheduled;
		const char *header;
		long long want;
	} cases[] = {
		{5000, "7", 7000}, /* within [5 s, 10 s]: as asked */
		{5000, "1", 5000}, /* sooner than scheduled: scheduled */
		{5000, "0", 5000},
		{5000, "3600", 10000}, /* much later: twice scheduled */
		{5000, "10", 10000},   /* exactly the upper bound */
		{5000, " 8 ", 8000},   /* optional whitespace */
		{5000, "8\r\n", 8000},
		{5000, "99999999999999999999999", 10000}, /* saturates, no overflow */
		{0, "0", 1000},				  /* nothing scheduled: [1 s, 2 s] */
		{0, "1", 1000},
		{0, "2", 2000},
		{0, "60", 2000},
		{1500, "2", 2000}, /* scheduled delays are not rounded to seconds */
		{LLONG_MAX, "5", LLONG_MAX},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long long got = retry_after_clamp_ms(cases[i].scheduled, cases[i].header, 0);
		UNIT_CHECK(got == cases[i].want,
			   "scheduled %lld, Retry-After '%s': %lld, want %lld", cases[i].scheduled,
			   cases[i].header, got, cases[i].want);
	}
}

UNIT_TEST(retry_after_dates)
{
	static const struct {
		const char *header;
		long long epoch;
	} dates[] = {
		{"Wed, 21 Oct 2015 07:28:00 GMT", 1445412480},
		{"Sun, 06 Nov 1994 08:49:37 GMT", 784111777},
		{"Sunday, 06-Nov-94 08:49:37 GMT", 784111777}, /* RFC 850 */
		{"Sun Nov  6 08:49:37 1994", 784111777},       /* asctime */
		{"Thu, 29 Feb 2024 23:59:59 GMT", 1709251199},
		{"Mon, 01 Mar 2100 00:00:00 GMT", 4107542400LL},
		{"Fri, 31 Dec 9999 23:59:59 GMT", 253402300799LL},
		{"Thu, 01 Jan 1970 00:00:00 GMT", 0},
	};
	for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++) {
		/* 15 s ahead with 10 s scheduled: 15000 only if the date parsed exactly. */
		long long got = retry_after_clamp_ms(10000, dates[i].header, dates[i].epoch - 15);
		UNIT_CHECK(got == 15000, "'%s' 15 s ahead: %lld, want 15000", dates[i].header, got);
	}
	/* A date in the past asks for no wait: the scheduled delay stands. */
	UNIT_CHECK(retry_after_clamp_ms(10000, dates[0].header, dates[0].epoch + 3600) == 10000,
		   "date in the past");
	UNIT_CHECK(retry_after_clamp_ms(0, dates[0].header, dates[0].epoch + 3600) == 1000,
		   "date in the past, nothing scheduled");
	/* Far in the future: twice the scheduled delay. */
	UNIT_CHECK(retry_after_clamp_ms(10000, dates[6].header, 0) == 20000, "year 9999");
}

UNIT_TEST(disable)
{
	UNIT_CHECK(retry_should_disable(410), "410 must disable");
	static const int keep[] = {0, 200, 301, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504};
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		UNIT_CHECK(!retry_should_disable(keep[i]), "%d disables", keep[i]);
}

int main(void)
{
	UNIT_RUN(schedule_without_jitter);
	UNIT_RUN(jitter_band);
	UNIT_RUN(odd_inputs);
	UNIT_RUN(retry_after_absent_or_bad);
	UNIT_RUN(retry_after_seconds);
	UNIT_RUN(retry_after_dates);
	UNIT_RUN(disable);
	return UNIT_DONE();
}
