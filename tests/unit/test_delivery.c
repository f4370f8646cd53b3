/*
 * Unit tests for the decisions of dispatcher/delivery.c: the transitions
 * of the engine's state (its life and its claim loop) for every event,
 * when a claim is sent and when the loop rests (no room, records held for
 * writing over their bounds, the claim connection down), and when the end
 * of a request is worth a claim; the writer's batches: how long records
 * gather, how many records the next write takes (count, bytes, one by one
 * after a refused batch) and what a write's outcome does to the queue;
 * and how a webhook's window of requests at once moves with its answers.
 */
#include "delivery.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"WAITING", "IDLE", "CLAIMING", "CLAIMING_AGAIN",
					  "STOPPING"};
static const char *const event_names[] = {"SCHEMA_READY",  "WAKE",	   "FREED", "CLAIMED_FULL",
					  "CLAIMED_SHORT", "CLAIM_FAILED", "STOP"};
#define NSTATES 5
#define NEVENTS 7

/* Room for claims, nothing held, the connection up. */
static const struct delivery_facts roomy = {.up = true, .room = 10, .held = 0, .held_bytes = 0};

/* Checks one transition: from s on ev with facts f, to want, claiming or not. */
#define EXPECT(s, ev, f, want, want_claim)                                                         \
	do {                                                                                       \
		bool claim_ = !(want_claim);                                                       \
		enum delivery_state got_ = delivery_next((s), (ev), (f), &claim_);                 \
		UNIT_CHECK((int)got_ == (int)(want) && claim_ == (want_claim),                     \
			   "%s on %s: %s%s, want %s%s", state_names[s], event_names[ev],           \
			   state_names[got_], claim_ ? " + claim" : "", state_names[want],         \
			   (want_claim) ? " + claim" : "");                                        \
	} while (0)

UNIT_TEST(waiting_for_the_schema)
{
	for (int ev = 0; ev < NEVENTS; ev++) {
		enum delivery_state want = ev == DELIVERY_EV_SCHEMA_READY ? DELIVERY_IDLE
					   : ev == DELIVERY_EV_STOP	  ? DELIVERY_STOPPING
									  : DELIVERY_WAITING;
		EXPECT(DELIVERY_WAITING, ev, &roomy, want, false);
	}
}

UNIT_TEST(stopping_is_for_good)
{
	/* From every state, on STOP; and nothing leaves STOPPING or claims from it. */
	for (int s = 0; s < NSTATES; s++)
		EXPECT(s, DELIVERY_EV_STOP, &roomy, DELIVERY_STOPPING, false);
	for (int ev = 0; ev < NEVENTS; ev++)
		EXPECT(DELIVERY_STOPPING, ev, &roomy, DELIVERY_STOPPING, false);
}

UNIT_TEST(a_wake_up_claims_when_there_is_room)
{
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &roomy, DELIVERY_CLAIMING, true);
	struct delivery_facts f = roomy;
	f.room = 1;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &f, DELIVERY_CLAIMING, true);
	/* Every slot busy (or more than every: the limit was lowered by a reload). */
	f.room = 0;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &f, DELIVERY_IDLE, false);
	f.room = -3;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &f, DELIVERY_IDLE, false);
	/* The claim connection is down. */
	f = roomy;
	f.up = false;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &f, DELIVERY_IDLE, false);
}

UNIT_TEST(claims_pause_while_records_wait_for_the_database)
{
	struct delivery_facts f = roomy;
	f.held = DELIVERY_WRITE_BATCH_MAX - 1;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &f, DELIVERY_CLAIMING, true);
	f.held = DELIVERY_WRITE_BATCH_MAX;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &f, DELIVERY_IDLE, false);
	f = roomy;
	f.held = 3;
	f.held_bytes = DELIVERY_HELD_BYTES_MAX - 1;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &f, DELIVERY_CLAIMING, true);
	f.held_bytes = DELIVERY_HELD_BYTES_MAX;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &f, DELIVERY_IDLE, false);
	/* The same bounds hold after a full claim. */
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_CLAIMED_FULL, &f, DELIVERY_IDLE, false);
}

UNIT_TEST(a_wake_up_while_claiming_is_noted)
{
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_WAKE, &roomy, DELIVERY_CLAIMING_AGAIN, false);
	EXPECT(DELIVERY_CLAIMING_AGAIN, DELIVERY_EV_WAKE, &roomy, DELIVERY_CLAIMING_AGAIN, false);
	/* Even without room: the claim's rows may fail at once and free their slots. */
	struct delivery_facts f = roomy;
	f.room = 0;
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_WAKE, &f, DELIVERY_CLAIMING_AGAIN, false);
	/* Not with the connection down: the claim running will fail. */
	f = roomy;
	f.up = false;
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_WAKE, &f, DELIVERY_CLAIMING, false);
}

UNIT_TEST(a_full_claim_claims_again)
{
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_CLAIMED_FULL, &roomy, DELIVERY_CLAIMING, true);
	EXPECT(DELIVERY_CLAIMING_AGAIN, DELIVERY_EV_CLAIMED_FULL, &roomy, DELIVERY_CLAIMING, true);
	/* Its rows filled every slot. */
	struct delivery_facts f = roomy;
	f.room = 0;
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_CLAIMED_FULL, &f, DELIVERY_IDLE, false);
	EXPECT(DELIVERY_CLAIMING_AGAIN, DELIVERY_EV_CLAIMED_FULL, &f, DELIVERY_IDLE, false);
}

UNIT_TEST(a_short_claim_rests_unless_woken_meanwhile)
{
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_CLAIMED_SHORT, &roomy, DELIVERY_IDLE, false);
	EXPECT(DELIVERY_CLAIMING_AGAIN, DELIVERY_EV_CLAIMED_SHORT, &roomy, DELIVERY_CLAIMING, true);
	struct delivery_facts f = roomy;
	f.room = 0;
	EXPECT(DELIVERY_CLAIMING_AGAIN, DELIVERY_EV_CLAIMED_SHORT, &f, DELIVERY_IDLE, false);
	f = roomy;
	f.up = false;
	EXPECT(DELIVERY_CLAIMING_AGAIN, DELIVERY_EV_CLAIMED_SHORT, &f, DELIVERY_IDLE, false);
}

UNIT_TEST(a_failed_claim_rests)
{
	for (int s = DELIVERY_IDLE; s <= DELIVERY_CLAIMING_AGAIN; s++)
		EXPECT(s, DELIVERY_EV_CLAIM_FAILED, &roomy, DELIVERY_IDLE, false);
}

UNIT_TEST(the_schema_ready_again_changes_nothing)
{
	for (int s = DELIVERY_IDLE; s <= DELIVERY_CLAIMING_AGAIN; s++)
		EXPECT(s, DELIVERY_EV_SCHEMA_READY, &roomy, s, false);
}

UNIT_TEST(a_day_in_the_life)
{
	/* The events a running engine sees, one after another, and what it does. */
	static const struct {
		enum delivery_event ev;
		int room;
		enum delivery_state want;
		bool claim;
		bool limited; /* the last claim, or a rest, lacked room */
	} walk[] = {
		{DELIVERY_EV_WAKE, 10, DELIVERY_WAITING, false,
		 false}, /* a NOTIFY before the schema */
		{DELIVERY_EV_SCHEMA_READY, 10, DELIVERY_IDLE, false, false},
		{DELIVERY_EV_WAKE, 10, DELIVERY_CLAIMING, true, false},		/* LISTEN done */
		{DELIVERY_EV_WAKE, 10, DELIVERY_CLAIMING_AGAIN, false, false},	/* a NOTIFY */
		{DELIVERY_EV_CLAIMED_SHORT, 7, DELIVERY_CLAIMING, true, false}, /* 3 started */
		{DELIVERY_EV_CLAIMED_FULL, 0, DELIVERY_IDLE, false, false},  /* 7 more: all slots */
		{DELIVERY_EV_WAKE, 0, DELIVERY_IDLE, false, false},	     /* the poll */
		{DELIVERY_EV_FREED, 1, DELIVERY_CLAIMING, true, true},	     /* a request ended */
		{DELIVERY_EV_CLAIMED_SHORT, 1, DELIVERY_IDLE, false, false}, /* nothing more due */
		{DELIVERY_EV_FREED, 2, DELIVERY_IDLE, false, false},   /* nothing to claim for */
		{DELIVERY_EV_WAKE, 2, DELIVERY_CLAIMING, true, false}, /* a NOTIFY */
		{DELIVERY_EV_CLAIM_FAILED, 1, DELIVERY_IDLE, false, false}, /* connection lost */
		{DELIVERY_EV_WAKE, 1, DELIVERY_CLAIMING, true, false},	    /* LISTEN again */
		{DELIVERY_EV_STOP, 1, DELIVERY_STOPPING, false, false},	    /* SIGTERM */
		{DELIVERY_EV_CLAIMED_FULL, 0, DELIVERY_STOPPING, false, false}, /* its rows start */
		{DELIVERY_EV_WAKE, 1, DELIVERY_STOPPING, false, false},
	};
	enum delivery_state s = DELIVERY_WAITING;
	for (size_t i = 0; i < sizeof(walk) / sizeof(walk[0]); i++) {
		struct delivery_facts f = roomy;
		f.room = walk[i].room;
		f.limited = walk[i].limited;
		bool claim;
		enum delivery_state next = delivery_next(s, walk[i].ev, &f, &claim);
		UNIT_CHECK(next == walk[i].want && claim == walk[i].claim,
			   "step %zu: %s on %s gave %s%s", i, state_names[s],
			   event_names[walk[i].ev], state_names[next], claim ? " + claim" : "");
		s = next;
	}
}

/* n records of len bytes each (all the same text). */
static struct delivery_record *records(int n, size_t len, char **text)
{
	*text = malloc(len + 1);
	memset(*text, 'x', len);
	(*text)[len] = '\0';
	struct delivery_record *r = calloc((size_t)n, sizeof(*r));
	for (int i = 0; i < n; i++)
		r[i] = (struct delivery_record){.json = *text, .len = len};
	return r;
}

UNIT_TEST(a_write_takes_up_to_a_batch_of_records)
{
	char *text;
	int n = 2 * DELIVERY_WRITE_BATCH_MAX + 5;
	struct delivery_record *r = records(n, 100, &text);
	UNIT_CHECK(delivery_write_take(r, 0, 0) == 0, "nothing held");
	UNIT_CHECK(delivery_write_take(r, 1, 0) == 1, "one held");
	UNIT_CHECK(delivery_write_take(r, 17, 0) == 17, "17 held: %d",
		   delivery_write_take(r, 17, 0));
	UNIT_CHECK(delivery_write_take(r, DELIVERY_WRITE_BATCH_MAX, 0) == DELIVERY_WRITE_BATCH_MAX,
		   "a batch held");
	UNIT_CHECK(delivery_write_take(r, n, 0) == DELIVERY_WRITE_BATCH_MAX, "two batches held: %d",
		   delivery_write_take(r, n, 0));
	free(r);
	free(text);
}

UNIT_TEST(a_write_ends_with_the_record_that_reaches_the_byte_limit)
{
	char *text;
	/* 6 MiB each: after two the array is 12 MiB and 2 bytes, under 16; the third ends it. */
	struct delivery_record *r = records(5, 6 * 1024 * 1024, &text);
	UNIT_CHECK(delivery_write_take(r, 5, 0) == 3, "6 MiB records: %d",
		   delivery_write_take(r, 5, 0));
	UNIT_CHECK(delivery_write_take(r, 2, 0) == 2, "two held: %d", delivery_write_take(r, 2, 0));
	free(r);
	free(text);
	/* A record as large as the limit goes alone, and is never held back. */
	r = records(3, DELIVERY_WRITE_BATCH_BYTES, &text);
	UNIT_CHECK(delivery_write_take(r, 3, 0) == 1, "16 MiB records: %d",
		   delivery_write_take(r, 3, 0));
	free(r);
	free(text);
	/* The limit counts the brackets and commas: '[' + 2 x (8 MiB - 1) + ',' is 16 MiB. */
	r = records(3, DELIVERY_WRITE_BATCH_BYTES / 2 - 1, &text);
	UNIT_CHECK(delivery_write_take(r, 3, 0) == 2, "8 MiB - 1 records: %d",
		   delivery_write_take(r, 3, 0));
	free(r);
	free(text);
	r = records(3, DELIVERY_WRITE_BATCH_BYTES / 2 - 2, &text);
	UNIT_CHECK(delivery_write_take(r, 3, 0) == 3, "8 MiB - 2 records: %d",
		   delivery_write_take(r, 3, 0));
	free(r);
	free(text);
}

UNIT_TEST(a_refused_batch_is_written_one_by_one)
{
	char *text;
	struct delivery_record *r = records(50, 10, &text);
	int suspects = 0;
	/* A batch of 50 is refused: nothing leaves the queue; its 50 records are suspects. */
	UNIT_CHECK(delivery_write_take(r, 50, suspects) == 50, "first batch");
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITE_REFUSED, 50, &suspects) == 0,
		   "a refused batch drops nothing");
	UNIT_CHECK(suspects == 50, "suspects %d, want 50", suspects);
	/* Then one at a time: written, refused (dropped), lost (kept). */
	UNIT_CHECK(delivery_write_take(r, 50, suspects) == 1, "a suspect goes alone");
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITTEN, 1, &suspects) == 1, "written");
	UNIT_CHECK(suspects == 49, "suspects %d, want 49", suspects);
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITE_REFUSED, 1, &suspects) == 1,
		   "a refused single record is dropped");
	UNIT_CHECK(suspects == 48, "suspects %d, want 48", suspects);
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITE_LOST, 1, &suspects) == 0, "lost: kept");
	UNIT_CHECK(suspects == 48, "suspects %d after a lost write, want 48", suspects);
	UNIT_CHECK(delivery_write_take(r, 48, suspects) == 1, "still one by one");
	/* When the last suspect is written, batches resume. */
	suspects = 1;
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITTEN, 1, &suspects) == 1, "the last suspect");
	UNIT_CHECK(suspects == 0, "suspects %d, want 0", suspects);
	UNIT_CHECK(delivery_write_take(r, 47, suspects) == 47, "batches again: %d",
		   delivery_write_take(r, 47, suspects));
	free(r);
	free(text);
}

UNIT_TEST(what_a_write_outcome_does_to_the_queue)
{
	int suspects = 0;
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITTEN, 7, &suspects) == 7 && suspects == 0,
		   "a written batch leaves");
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITE_LOST, 7, &suspects) == 0 && suspects == 0,
		   "a lost batch stays");
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITE_REFUSED, 1, &suspects) == 1 && suspects == 0,
		   "a refused lone record is given up");
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITE_REFUSED, 2, &suspects) == 0 && suspects == 2,
		   "a refused pair becomes suspects");
	suspects = 3;
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITTEN, 5, &suspects) == 5 && suspects == 0,
		   "more written than suspected: suspects %d", suspects);
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITE_DEFERRED, 7, &suspects) == 0 && suspects == 0,
		   "a batch the database could not write stays, whole");
	suspects = 4;
	UNIT_CHECK(delivery_write_done(DELIVERY_WRITE_DEFERRED, 1, &suspects) == 0 && suspects == 4,
		   "so does a suspect: suspects %d", suspects);
}

UNIT_TEST(a_refusal_is_the_records_only_for_their_data)
{
	static const char *records[] = {"22P02", "22021", "23505", "23514", "54000"};
	static const char *database[] = {"53100", "53200", "55P03", "57014", "40001",
					 "40P01", "42883", "XX000", ""};
	for (size_t i = 0; i < sizeof(records) / sizeof(*records); i++)
		UNIT_CHECK(delivery_refusal_is_records(records[i]), "%s: the records'", records[i]);
	for (size_t i = 0; i < sizeof(database) / sizeof(*database); i++)
		UNIT_CHECK(!delivery_refusal_is_records(database[i]), "%s: the database's",
			   database[i]);
}

UNIT_TEST(a_window_widens_while_fast_and_halves_otherwise)
{
	UNIT_CHECK(delivery_window_start(256) == DELIVERY_WINDOW_START, "start: %d",
		   delivery_window_start(256));
	UNIT_CHECK(delivery_window_start(4) == 4, "a lower cap: %d", delivery_window_start(4));
	UNIT_CHECK(delivery_window_next(16, 256, true) == 17, "fast: %d",
		   delivery_window_next(16, 256, true));
	UNIT_CHECK(delivery_window_next(256, 256, true) == 256, "fast at the cap: %d",
		   delivery_window_next(256, 256, true));
	UNIT_CHECK(delivery_window_next(100, 256, false) == 50, "slow: %d",
		   delivery_window_next(100, 256, false));
	UNIT_CHECK(delivery_window_next(20, 256, false) == 16, "slow, not below the start: %d",
		   delivery_window_next(20, 256, false));
	UNIT_CHECK(delivery_window_next(16, 256, false) == 16, "slow at the start: %d",
		   delivery_window_next(16, 256, false));
	UNIT_CHECK(delivery_window_next(2, 2, true) == 2, "a cap below the start: %d",
		   delivery_window_next(2, 2, true));
	UNIT_CHECK(delivery_window_next(2, 2, false) == 2, "a cap below the start, slow: %d",
		   delivery_window_next(2, 2, false));
	/* A window left wide by a higher cap comes down at a reload. */
	UNIT_CHECK(delivery_window_next(200, 32, true) == 32, "over a lowered cap: %d",
		   delivery_window_next(200, 32, true));
	int w = delivery_window_start(256);
	for (int i = 0; i < 1000; i++)
		w = delivery_window_next(w, 256, true);
	UNIT_CHECK(w == 256, "1000 fast answers: %d", w);
	w = delivery_window_next(w, 256, false);
	UNIT_CHECK(w == 128, "then one failure: %d", w);
}

UNIT_TEST(a_freed_slot_claims_only_what_the_last_claim_lacked)
{
	/* The last claim took all that was due: what comes later is NOTIFYed. */
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_FREED, &roomy, DELIVERY_IDLE, false);
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_FREED, &roomy, DELIVERY_CLAIMING, false);
	EXPECT(DELIVERY_CLAIMING_AGAIN, DELIVERY_EV_FREED, &roomy, DELIVERY_CLAIMING_AGAIN, false);
	/* It filled a window, or all slots: the freed slot may have due work. */
	struct delivery_facts f = roomy;
	f.limited = true;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_FREED, &f, DELIVERY_CLAIMING, true);
	EXPECT(DELIVERY_CLAIMING, DELIVERY_EV_FREED, &f, DELIVERY_CLAIMING_AGAIN, false);
	f.room = 0;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_FREED, &f, DELIVERY_IDLE, false);
	f.room = 10;
	f.up = false;
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_FREED, &f, DELIVERY_IDLE, false);
	/* A NOTIFY or the poll claims whatever the last claim did. */
	EXPECT(DELIVERY_IDLE, DELIVERY_EV_WAKE, &roomy, DELIVERY_CLAIMING, true);
}

UNIT_TEST(records_gather_for_a_moment_before_a_write)
{
	const int g = DELIVERY_WRITE_GATHER_MS;
	UNIT_CHECK(delivery_write_wait_ms(0, 0, 0, false) == 0, "nothing held");
	UNIT_CHECK(delivery_write_wait_ms(1, 0, 0, false) == g, "one just queued: %ld",
		   delivery_write_wait_ms(1, 0, 0, false));
	UNIT_CHECK(delivery_write_wait_ms(5, 5, 0, false) == g - 5, "the oldest 5 ms old: %ld",
		   delivery_write_wait_ms(5, 5, 0, false));
	UNIT_CHECK(delivery_write_wait_ms(5, g, 0, false) == 0, "the oldest has waited enough");
	UNIT_CHECK(delivery_write_wait_ms(5, 10 * g, 0, false) == 0, "long past");
	UNIT_CHECK(delivery_write_wait_ms(5, -3, 0, false) == g, "a clock read out of order");
	UNIT_CHECK(delivery_write_wait_ms(DELIVERY_WRITE_BATCH_MAX, 0, 0, false) == 0,
		   "a full batch goes now");
	UNIT_CHECK(delivery_write_wait_ms(DELIVERY_WRITE_BATCH_MAX - 1, 0, 0, false) == g,
		   "one short of a batch waits");
	UNIT_CHECK(delivery_write_wait_ms(3, 0, 2, false) == 0, "suspects go one by one, now");
	UNIT_CHECK(delivery_write_wait_ms(3, 0, 0, true) == 0, "a stopping engine writes now");
}

int main(void)
{
	UNIT_RUN(waiting_for_the_schema);
	UNIT_RUN(stopping_is_for_good);
	UNIT_RUN(a_wake_up_claims_when_there_is_room);
	UNIT_RUN(claims_pause_while_records_wait_for_the_database);
	UNIT_RUN(a_wake_up_while_claiming_is_noted);
	UNIT_RUN(a_full_claim_claims_again);
	UNIT_RUN(a_short_claim_rests_unless_woken_meanwhile);
	UNIT_RUN(a_failed_claim_rests);
	UNIT_RUN(the_schema_ready_again_changes_nothing);
	UNIT_RUN(a_day_in_the_life);
	UNIT_RUN(a_write_takes_up_to_a_batch_of_records);
	UNIT_RUN(a_write_ends_with_the_record_that_reaches_the_byte_limit);
	UNIT_RUN(a_refused_batch_is_written_one_by_one);
	UNIT_RUN(what_a_write_outcome_does_to_the_queue);
	UNIT_RUN(a_refusal_is_the_records_only_for_their_data);
	UNIT_RUN(a_window_widens_while_fast_and_halves_otherwise);
	UNIT_RUN(a_freed_slot_claims_only_what_the_last_claim_lacked);
	UNIT_RUN(records_gather_for_a_moment_before_a_write);
	return UNIT_DONE();
}
