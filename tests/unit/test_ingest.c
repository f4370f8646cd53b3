/*
 * Unit tests for the batching decisions of dispatcher/ingest.c: when a
 * batch may start while others run (none running, the queue as full as the
 * smallest running batch or a whole batch, a running batch turned slow,
 * and how long to wait otherwise), which queued requests a batch takes
 * (the event limit, requests retried alone), and what a failed batch means
 * for its requests.
 */
#include "ingest.h"
#include "unit.h"

#define SLOW INGEST_BATCH_SLOW_MS
#define MAX INGEST_BATCH_MAX

/* The wait with the given running batches (events, ran_ms) and queued events. */
static long wait_for(int queued, int n, const struct ingest_running *running)
{
	return ingest_batch_wait_ms(running, n, queued);
}

UNIT_TEST(no_batch_running_starts_at_once)
{
	UNIT_CHECK(wait_for(1, 0, NULL) == 0, "one event, nothing running: %ld",
		   wait_for(1, 0, NULL));
	UNIT_CHECK(wait_for(MAX, 0, NULL) == 0, "a full batch, nothing running");
}

UNIT_TEST(a_running_commit_holds_back_a_smaller_batch)
{
	/* One batch of 10 events has run 5 ms: fewer than 10 queued wait for it to turn slow. */
	const struct ingest_running one[] = {{10, 5}};
	for (int queued = 1; queued < 10; queued++) {
		long w = wait_for(queued, 1, one);
		UNIT_CHECK(w == SLOW - 5, "%d queued: wait %ld, want %d", queued, w, SLOW - 5);
	}
	/* As many as the running batch: the second batch is as full as the first. */
	UNIT_CHECK(wait_for(10, 1, one) == 0, "10 queued: %ld", wait_for(10, 1, one));
	UNIT_CHECK(wait_for(11, 1, one) == 0, "11 queued: %ld", wait_for(11, 1, one));
	/* Just started: the whole slow limit is left. */
	const struct ingest_running fresh[] = {{10, 0}};
	UNIT_CHECK(wait_for(1, 1, fresh) == SLOW, "just started: %ld", wait_for(1, 1, fresh));
}

UNIT_TEST(the_smallest_running_batch_and_the_first_to_turn_slow_decide)
{
	/* 50 events for 2 ms, 8 events for 12 ms. */
	const struct ingest_running two[] = {{50, 2}, {8, 12}};
	UNIT_CHECK(wait_for(8, 2, two) == 0, "as many as the smallest: %ld", wait_for(8, 2, two));
	UNIT_CHECK(wait_for(7, 2, two) == SLOW - 12, "7 queued: %ld, want %d", wait_for(7, 2, two),
		   SLOW - 12);
	/* The same batches the other way round. */
	const struct ingest_running swapped[] = {{8, 12}, {50, 2}};
	UNIT_CHECK(wait_for(7, 2, swapped) == SLOW - 12, "swapped: %ld", wait_for(7, 2, swapped));
	UNIT_CHECK(wait_for(8, 2, swapped) == 0, "swapped, 8 queued: %ld", wait_for(8, 2, swapped));
}

UNIT_TEST(a_whole_batch_queued_starts)
{
	/* A request of more events than a batch holds runs as one batch; a full queue need not
	 * match it. */
	const struct ingest_running big[] = {{3 * MAX, 1}};
	UNIT_CHECK(wait_for(MAX, 1, big) == 0, "a whole batch queued: %ld", wait_for(MAX, 1, big));
	UNIT_CHECK(wait_for(MAX - 1, 1, big) == SLOW - 1, "one event short: %ld",
		   wait_for(MAX - 1, 1, big));
}

UNIT_TEST(a_slow_batch_holds_back_no_other)
{
	const struct ingest_running slow[] = {{100, SLOW}};
	UNIT_CHECK(wait_for(1, 1, slow) == 0, "at the slow limit: %ld", wait_for(1, 1, slow));
	const struct ingest_running almost[] = {{100, SLOW - 1}};
	UNIT_CHECK(wait_for(1, 1, almost) == 1, "1 ms before it: %ld", wait_for(1, 1, almost));
	/* One slow batch among quick ones is enough. */
	const struct ingest_running mixed[] = {{100, 1}, {100, 3 * SLOW}, {100, 2}};
	UNIT_CHECK(wait_for(1, 3, mixed) == 0, "one of three slow: %ld", wait_for(1, 3, mixed));
}

UNIT_TEST(a_batch_takes_requests_up_to_the_event_limit)
{
	/* An empty batch takes any request: alone, or larger than a batch. */
	UNIT_CHECK(ingest_batch_takes(0, false, 0, 0, false, 1, 100), "empty batch, 1 event");
	UNIT_CHECK(ingest_batch_takes(0, false, 0, 0, true, 1, 100),
		   "empty batch, a request alone");
	UNIT_CHECK(ingest_batch_takes(0, false, 0, 0, false, 5 * MAX, 100),
		   "empty batch, 5 batches' worth");
	/* Then up to exactly MAX events. */
	UNIT_CHECK(ingest_batch_takes(3, false, MAX - 10, 0, false, 10, 100),
		   "filling to exactly MAX");
	UNIT_CHECK(!ingest_batch_takes(3, false, MAX - 10, 0, false, 11, 100),
		   "one event over MAX");
	UNIT_CHECK(!ingest_batch_takes(1, false, MAX, 0, false, 1, 100), "a full batch");
	UNIT_CHECK(ingest_batch_takes(7, false, 12, 0, false, 3, 100), "a small request");
}

UNIT_TEST(a_batch_takes_requests_up_to_the_byte_limit)
{
	const size_t max = INGEST_BATCH_MAX_BYTES;
	/* One request larger than a batch's bytes still runs, alone. */
	UNIT_CHECK(ingest_batch_takes(0, false, 0, 0, false, 1, 4 * max), "empty batch, 4x bytes");
	UNIT_CHECK(ingest_batch_takes(2, false, 2, max - 10, false, 1, 10),
		   "filling to exactly max");
	UNIT_CHECK(!ingest_batch_takes(2, false, 2, max - 10, false, 1, 11), "one byte over");
	UNIT_CHECK(!ingest_batch_takes(1, false, 1, 4 * max, false, 1, 1),
		   "a batch already over its bytes takes no more");
	UNIT_CHECK(!ingest_batch_takes(1, false, 1, 1, false, 1, (size_t)-1), "no wrap-around");
}

UNIT_TEST(a_request_retried_alone_runs_alone)
{
	UNIT_CHECK(!ingest_batch_takes(1, false, 1, 0, true, 1, 100), "an alone request joining");
	UNIT_CHECK(!ingest_batch_takes(1, true, 1, 0, false, 1, 100), "joining an alone request");
	UNIT_CHECK(!ingest_batch_takes(1, true, 1, 0, true, 1, 100), "two alone requests");
}

UNIT_TEST(what_a_failed_batch_means)
{
	/* The connection dropped: 503 for all, however many. */
	UNIT_CHECK(ingest_batch_failure(true, "", 1, 0) == INGEST_FAILURE_RETRY, "lost, 1 request");
	UNIT_CHECK(ingest_batch_failure(true, "", 9, 0) == INGEST_FAILURE_RETRY,
		   "lost, 9 requests");
	/* An SQL error with several requests: each again, alone, whatever the error. */
	static const char *const states[] = {"22P02", "23505", "40001", "57014", "XX000", ""};
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		UNIT_CHECK(ingest_batch_failure(false, states[i], 2, 0) == INGEST_FAILURE_SPLIT,
			   "%s, 2 requests", states[i]);
	/* A request alone: bad data (classes 22 and 23) is its own fault, 400. */
	static const char *const bad[] = {"22P02", "22021", "23505", "23514", "22000"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		UNIT_CHECK(ingest_batch_failure(false, bad[i], 1, 0) == INGEST_FAILURE_REFUSED,
			   "%s alone", bad[i]);
	/* Anything else is the database's: 503, the registry retries. */
	static const char *const theirs[] = {"40001", "40P01", "57014", "53300", "XX000",
					     "2",     "",      "42P01", "25006"};
	for (size_t i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++)
		UNIT_CHECK(ingest_batch_failure(false, theirs[i], 1, 0) == INGEST_FAILURE_RETRY,
			   "'%s' alone", theirs[i]);
	/* A foreign key violation is a row removed meanwhile: again, alone, a few times. */
	for (int again = 0; again < INGEST_AGAIN_MAX; again++)
		UNIT_CHECK(ingest_batch_failure(false, "23503", 1, again) == INGEST_FAILURE_SPLIT,
			   "23503 alone, after %d", again);
	UNIT_CHECK(ingest_batch_failure(false, "23503", 1, INGEST_AGAIN_MAX) ==
			   INGEST_FAILURE_RETRY,
		   "23503 alone, again and again");
	UNIT_CHECK(ingest_batch_failure(false, "23503", 3, INGEST_AGAIN_MAX) ==
			   INGEST_FAILURE_SPLIT,
		   "23503, 3 requests");
}

int main(void)
{
	UNIT_RUN(no_batch_running_starts_at_once);
	UNIT_RUN(a_running_commit_holds_back_a_smaller_batch);
	UNIT_RUN(the_smallest_running_batch_and_the_first_to_turn_slow_decide);
	UNIT_RUN(a_whole_batch_queued_starts);
	UNIT_RUN(a_slow_batch_holds_back_no_other);
	UNIT_RUN(a_batch_takes_requests_up_to_the_event_limit);
	UNIT_RUN(a_batch_takes_requests_up_to_the_byte_limit);
	UNIT_RUN(a_request_retried_alone_runs_alone);
	UNIT_RUN(what_a_failed_batch_means);
	return UNIT_DONE();
}
