/*
 * retry: see retry.h.
 *
 * HTTP-dates are parsed here rather than with strptime() and timegm():
 * strptime's month and day names follow the locale, and an HTTP-date is
 * always English and always GMT. RFC 9110 asks recipients to accept the
 * two obsolete forms as well as IMF-fixdate, and they cost a line each.
 */
#include "retry.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A Retry-After further out than this (about 31 years) is read as this. */
#define MAX_DELTA_S 1000000000LL

long long retry_delay_ms(const long long *schedule_ms, int steps, int attempt, double jitter01)
{
	if (!schedule_ms || steps < 1)
		return 0;
	int i = attempt < 1 ? 0 : attempt > steps ? steps - 1 : attempt - 1;
	long long d = schedule_ms[i];
	if (d <= 0)
		return 0;
	/* Written so that NaN, too, falls to 0. */
	if (!(jitter01 >= 0.0))
		jitter01 = 0.0;
	if (jitter01 > 1.0)
		jitter01 = 1.0;
	double v = (double)d * (0.8 + 0.4 * jitter01);
	/* (double)LLONG_MAX is 2^63, the first value that does not convert. */
	if (v >= (double)LLONG_MAX)
		return LLONG_MAX;
	return (long long)(v + 0.5);
}

bool retry_should_disable(int status)
{
	/* 410 Gone: the endpoint says it will never take deliveries again. */
	return status == 410;
}

static bool is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Month number 1-12 of an English abbreviation, or 0. */
static int month_number(const char *name)
{
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	for (int i = 0; i < 12; i++)
		if (strcasecmp(name, months[i]) == 0)
			return i + 1;
	return 0;
}

/* Seconds since the epoch of a UTC date and time, after checking every field's range. */
static bool epoch_of(int y, int mon, int d, int hh, int mm, int ss, long long *out)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	static const int before[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
	if (y < 1970 || y > 9999 || mon < 1 || mon > 12 || d < 1 ||
	    d > mdays[mon - 1] + (mon == 2 && is_leap(y)) || hh < 0 || hh > 23 || mm < 0 ||
	    mm > 59 || ss < 0 || ss > 60)
		return false;
	/* Leap days in the years 1970 .. y-1: those before y less those before 1970. */
	long long p = y - 1;
	long long leaps = p / 4 - p / 100 + p / 400 - (1969 / 4 - 1969 / 100 + 1969 / 400);
	long long days =
		365LL * (y - 1970) + leaps + before[mon - 1] + (mon > 2 && is_leap(y)) + (d - 1);
	*out = ((days * 24 + hh) * 60 + mm) * 60 + ss;
	return true;
}

/*
 * The three HTTP-date forms of RFC 9110 section 5.6.7. The field widths
 * keep sscanf from overflowing an int; the weekday is redundant and only
 * skipped.
 */
static bool parse_http_date(const char *s, long long *epoch)
{
	char wday[16], mon[4];
	int y, d, hh, mm, ss, n = 0;

	/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
	if (sscanf(s, "%15[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", wday, &d, mon, &y, &hh,
		   &mm, &ss, &n) == 7 &&
	    n > 0 && s[n] == '\0')
		return epoch_of(y, month_number(mon), d, hh, mm, ss, epoch);
	/* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT; a two-digit year is taken as 1970-2069. */
	n = 0;
	if (sscanf(s, "%15[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n", wday, &d, mon, &y, &hh,
		   &mm, &ss, &n) == 7 &&
	    n > 0 && s[n] == '\0')
		return epoch_of(y + (y < 70 ? 2000 : 1900), month_number(mon), d, hh, mm, ss,
				epoch);
	/* asctime(): Sun Nov  6 08:49:37 1994 */
	n = 0;
	if (sscanf(s, "%15[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", wday, mon, &d, &hh, &mm, &ss,
		   &y, &n) == 7 &&
	    n > 0 && s[n] == '\0')
		return epoch_of(y, month_number(mon), d, hh, mm, ss, epoch);
	return false;
}

/* delta-seconds = 1*DIGIT, saturating at MAX_DELTA_S. */
static bool parse_delta(const char *s, long long *seconds)
{
	long long v = 0;
	if (!*s)
		return false;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return false;
		if (v < MAX_DELTA_S)
			v = v * 10 + (*s - '0');
	}
	*seconds = v < MAX_DELTA_S ? v : MAX_DELTA_S;
	return true;
}

/* The seconds from now that the header asks for (0 for a date in the past). */
static bool parse_retry_after(const char *header, long long now_epoch_s, long long *seconds)
{
	char v[64];
	if (!header)
		return false;
	while (*header == ' ' || *header == '\t')
		header++;
	size_t len = strlen(header);
	while (len && (header[len - 1] == ' ' || header[len - 1] == '\t' ||
		       header[len - 1] == '\r' || header[len - 1] == '\n'))
		len--;
	if (len == 0 || len >= sizeof(v))
		return false;
	memcpy(v, header, len);
	v[len] = '\0';

	long long date;
	if (parse_delta(v, seconds))
		return true;
	if (!parse_http_date(v, &date))
		return false;
	long long delta = date - now_epoch_s;
	*seconds = delta < 0 ? 0 : delta > MAX_DELTA_S ? MAX_DELTA_S : delta;
	return true;
}

long long retry_after_clamp_ms(long long scheduled_ms, const char *retry_after_header,
			       long long now_epoch_s)
{
	long long asked_s;
	if (!parse_retry_after(retry_after_header, now_epoch_s, &asked_s))
		return scheduled_ms;
	long long lo = scheduled_ms > 0 ? scheduled_ms : 1000;
	long long hi = lo > LLONG_MAX / 2 ? LLONG_MAX : 2 * lo;
	long long asked_ms = asked_s > hi / 1000 ? hi : asked_s * 1000;
	return asked_ms < lo ? lo : asked_ms;
}
