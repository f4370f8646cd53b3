/*
 * retry: when a failed delivery is tried again, and when a webhook is given
 * up on. Pure arithmetic over the configured schedule, a Retry-After header
 * and the current time, all passed in, so the tests are deterministic; the
 * caller draws the jitter and reads the clock.
 *
 * The schedule (`retry_schedule`, default 0,5s,5m,30m,2h,5h,10h,10h) gives
 * the delay before each attempt: entry k-1 before attempt k, the last entry
 * repeating for attempts past its end. Every delay gets +-20% jitter so
 * that the deliveries an outage failed together do not all return at once.
 *
 * A Retry-After from the endpoint is honoured but bounded: never sooner
 * than the schedule says (a server cannot make us hammer it) and never
 * more than twice as late (a server cannot park a delivery for a week).
 */
#ifndef REGHOOK_RETRY_H
#define REGHOOK_RETRY_H

#include <stdbool.h>

/*
 * The delay in ms before attempt number attempt (1-based: attempt 1 uses
 * schedule_ms[0]). jitter01 in [0, 1) picks the point in [0.8d, 1.2d);
 * values outside are clamped into it. No schedule (steps < 1) gives 0.
 */
long long retry_delay_ms(const long long *schedule_ms, int steps, int attempt, double jitter01);

/*
 * The delay in ms after honouring a Retry-After header (delta-seconds or
 * an HTTP-date, compared with now_epoch_s). An absent or unparseable
 * header gives scheduled_ms unchanged. Otherwise the asked-for delay is
 * clamped to [scheduled_ms, 2 * scheduled_ms]; a scheduled delay of 0 is
 * clamped as if it were 1 s, i.e. to [1000, 2000], so that an endpoint
 * that says "later" is not retried at once.
 */
long long retry_after_clamp_ms(long long scheduled_ms, const char *retry_after_header,
			       long long now_epoch_s);

/* True for an HTTP status that disables the webhook rather than failing the attempt: 410 Gone. */
bool retry_should_disable(int status);

#endif
