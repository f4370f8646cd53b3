/*
 * clock: the monotonic clock in milliseconds, for timers and durations that
 * a change of the wall clock must not move.
 */
#ifndef REGHOOK_CLOCK_H
#define REGHOOK_CLOCK_H

#include <time.h>

static inline long long clock_monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
