/*
 * delivery: the outbound worker pool. Starts the new deliveries that
 * ingest batches hand over, and claims the other due deliveries from
 * PostgreSQL in batches (woken by NOTIFY, with a slow poll as a backstop),
 * sends each as an HTTP request through httpc (libcurl multi on the same
 * event loop), and writes the attempts back in batches. Limits: at most
 * max_in_flight requests in all, and to one webhook a window that widens
 * towards max_in_flight_per_webhook while it answers fast, so one slow
 * endpoint never holds back another.
 */
#ifndef REGHOOK_DELIVERY_H
#define REGHOOK_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>

struct daemon;
struct delivery;
struct pg_result; /* libpq's PGresult */

struct delivery *delivery_new(struct daemon *d);
void delivery_free(struct delivery *dp);
/* The schema is current: start claiming. */
void delivery_schema_ready(struct delivery *dp);
/* Stop claiming; requests in flight finish and are recorded. */
void delivery_stop(struct delivery *dp);
/* The configuration was replaced: apply the new limits. */
void delivery_reconfigure(struct delivery *dp);
/* Requests in flight, results not yet written, or deliveries handed over and not started. */
bool delivery_busy(const struct delivery *dp);

/*
 * Handing over (ingest() in schema/functions/ingest.sql): an ingest batch
 * may offer the engine's free slots, so that the deliveries its events
 * create are leased to this instance in the transaction that stores them,
 * with no NOTIFY, no claim, and no row version before the attempt's. What
 * an offer may lease is held back from claims and other offers until its
 * deliveries have started, so that together they never lease more than the
 * free slots: per webhook at most one a stored event, and of a webhook with
 * no request here lately only while nothing else is out (the claim takes
 * those).
 */
struct holder;
struct delivery_offer {
	char max_total[16];   /* ingest()'s max_total */
	char per_webhook[16]; /* its per_webhook */
	char timeout_ms[24];  /* request_timeout, for webhooks without their own */
	char *in_flight;      /* owned: its in_flight JSON object */
	struct holder *holder;
};
/*
 * For a batch of events: if there is room, fills *o and returns true;
 * delivery_offer_done() must follow. Else returns false and *o is empty.
 */
bool delivery_offer(struct delivery *dp, int events, struct delivery_offer *o);
/*
 * The batch that carried *o ran its statement (*o is emptied): the rows of
 * res with a job (a delivery_id) are the deliveries it leased to this
 * instance, started now like a claim's rows, before the batch's commit is
 * confirmed (a failed res starts none). Returns the gate their results
 * wait behind (NULL if none started): delivery_gate_open() once the
 * batch's transaction is over, committed or not. Until then the rows they
 * update are not visible to the writer, and a result written too early
 * would be lost. If the commit fails, the deliveries already sent have no
 * row: their results change nothing, and the registry's retry of the
 * unanswered events sends them again (at least once).
 */
struct delivery_gate;
struct delivery_gate *delivery_offer_done(struct delivery *dp, struct delivery_offer *o,
					  struct pg_result *res);
/*
 * The transaction behind g is over (sure: the server said how; else its
 * connection was lost, and its commit may land later): its deliveries'
 * results may be written.
 */
void delivery_gate_open(struct delivery *dp, struct delivery_gate *g, bool sure);

/*
 * The engine's decisions, pure functions of what it knows, so that the unit
 * tests (tests/unit/test_delivery.c) can drive them without a server.
 */

/*
 * Requests at once to one webhook: a window that starts at
 * DELIVERY_WINDOW_START (or max_in_flight_per_webhook, if lower), gains one
 * with each success answered within DELIVERY_WINDOW_FAST_MS, up to
 * max_in_flight_per_webhook, and halves, not below where it started, with
 * each failure or slower answer. A fast endpoint so gets the requests a
 * backlog needs, while a slow or failing one keeps the few it had.
 */
#define DELIVERY_WINDOW_START 16
#define DELIVERY_WINDOW_FAST_MS 100
/* The window after an answer: fast is a success within DELIVERY_WINDOW_FAST_MS. */
int delivery_window_next(int window, int cap, bool fast);
/* Where a webhook's window starts, for max_in_flight_per_webhook cap. */
int delivery_window_start(int cap);

#define DELIVERY_WRITE_BATCH_MAX 1000 /* attempt records per complete_deliveries() */
/*
 * Records carry response bodies (up to twice response_body_limit as hex),
 * so bytes are bounded too: a batch ends once it reaches
 * DELIVERY_WRITE_BATCH_BYTES, and claims pause while DELIVERY_HELD_BYTES_MAX
 * of records (or a whole batch of them) wait for the one being written.
 */
#define DELIVERY_WRITE_BATCH_BYTES (16 * 1024 * 1024)
#define DELIVERY_HELD_BYTES_MAX (32 * 1024 * 1024)
/*
 * A record whose delivery's row another transaction holds (a person's open
 * webhook_remove, say) is not waited for: complete_deliveries() says so
 * (busy) and the record is written again every DELIVERY_BUSY_RETRY_MS,
 * while the others go on, for up to DELIVERY_BUSY_KEEP_MS; then it is
 * dropped, and the delivery is tried again once its lease runs out.
 */
#define DELIVERY_BUSY_RETRY_MS 1000
#define DELIVERY_BUSY_KEEP_MS (10 * 60 * 1000)
/*
 * So is a record of a delivery handed over by a batch whose connection was
 * lost while it committed, as long as its row is not there: for up to
 * DELIVERY_UNSURE_KEEP_MS, in which the commit, if it is made, lands.
 */
#define DELIVERY_UNSURE_KEEP_MS (60 * 1000)

/*
 * The engine's state: its life and its claim loop, on the claim connection.
 * At most one claim runs at a time, and it asks for no more deliveries
 * than there are free slots, so every claimed row starts at once.
 */
enum delivery_state {
	/* Entered at delivery_new(). Left for IDLE when the schema is current. */
	DELIVERY_WAITING,
	/*
	 * No claim runs. Entered from WAITING; from CLAIMING when a claim
	 * returned fewer rows than asked for; when a claim failed or its
	 * connection dropped; and when a wake-up found no room (slots, or
	 * records held for writing over their bounds). Left for CLAIMING
	 * when a wake-up finds room.
	 */
	DELIVERY_IDLE,
	/*
	 * A claim runs. Entered when a wake-up or a full claim finds room.
	 * Left, once the rows it returned have started: for CLAIMING again
	 * if they were as many as asked (more may be due) and room is left,
	 * else for IDLE; for CLAIMING_AGAIN at a wake-up; for IDLE if the
	 * claim fails.
	 */
	DELIVERY_CLAIMING,
	/*
	 * A claim runs and a wake-up came meanwhile (a NOTIFY, a slot freed
	 * that the last claim lacked): what woke the loop may be newer than
	 * the claim. Left like CLAIMING, except that a short claim also claims
	 * again if room is left.
	 */
	DELIVERY_CLAIMING_AGAIN,
	/*
	 * Entered from any state at delivery_stop(); never left. No claim
	 * starts; a claim running still starts its rows, and requests in
	 * flight finish and are recorded.
	 */
	DELIVERY_STOPPING,
};

enum delivery_event {
	DELIVERY_EV_SCHEMA_READY,  /* the schema is current (again) */
	DELIVERY_EV_WAKE,	   /* deliveries may be due, or room was freed */
	DELIVERY_EV_FREED,	   /* a request ended: its slot is free */
	DELIVERY_EV_CLAIMED_FULL,  /* a claim returned as many rows as asked; all started */
	DELIVERY_EV_CLAIMED_SHORT, /* it returned fewer; all started */
	DELIVERY_EV_CLAIM_FAILED,  /* the claim failed, or the claim connection dropped */
	DELIVERY_EV_STOP,
};

/* What the engine knows when an event comes. */
struct delivery_facts {
	bool up;	   /* the claim connection is up */
	int room;	   /* max_in_flight less the requests in flight */
	int held;	   /* attempt records waiting, less those being written */
	size_t held_bytes; /* the bytes of all records waiting */
	/*
	 * The last claim may have left due deliveries for want of room: it
	 * filled a webhook's window or all of max_in_flight, or the loop
	 * rested with no room. Otherwise a freed slot is no reason to claim:
	 * what became due since that claim is NOTIFYed, and retries come
	 * with the poll. A claim for every finished request made most claims
	 * carry a row or two, and cost PostgreSQL more than the rows.
	 */
	bool limited;
};

/*
 * The next state after ev in state s. *claim_now is set when a claim must
 * be sent now (for f->room deliveries).
 */
enum delivery_state delivery_next(enum delivery_state s, enum delivery_event ev,
				  const struct delivery_facts *f, bool *claim_now)
	__attribute__((warn_unused_result));

/* The writer, on the done connection: what runs there. */
enum delivery_write_state {
	/* Nothing. Entered at start and when a write ends; left when records wait and the
	   connection is up. */
	DELIVERY_WRITE_IDLE,
	/* complete_deliveries() of up to a batch of records. Left when it ends. */
	DELIVERY_WRITE_BATCH,
	/* complete_deliveries() of one record of a refused batch (a suspect). Left when it ends. */
	DELIVERY_WRITE_SINGLE,
};

enum delivery_write_outcome {
	DELIVERY_WRITTEN,	/* committed */
	DELIVERY_WRITE_REFUSED, /* an SQL error: some record was bad */
	DELIVERY_WRITE_LOST,	/* the connection dropped: outcome unknown */
	DELIVERY_WRITE_DEFERRED /* an SQL error of the database's own: written again later */
};

/*
 * Whether a complete_deliveries() that failed with this SQLSTATE failed
 * for something in its records (a data exception, an integrity violation,
 * a value over a limit of PostgreSQL's: classes 22, 23 and 54), which
 * writing them again as they were cannot mend: they are written one by
 * one; else the database could not write them then (its disk full, out of
 * memory, a lock wait, a conflict, a cancel, a schema being migrated) and
 * they are kept, like records whose
 * rows another transaction holds (DELIVERY_BUSY_RETRY_MS, DELIVERY_BUSY_KEEP_MS), rather than
 * dropped: dropped, their deliveries were sent again once their leases ran out, and the attempts
 * made were missing from the history.
 */
bool delivery_refusal_is_records(const char *sqlstate) __attribute__((warn_unused_result));

/* An attempt record waiting to be written (complete_deliveries()). */
struct delivery_record {
	char *json;		    /* owned: one JSON object */
	size_t len;		    /* its length */
	long long queued_ms;	    /* when it was queued (monotonic) */
	struct delivery_gate *gate; /* a reference (delivery_offer_done), or NULL */
	char id[40];		    /* its delivery */
	int attempt;		    /* its attempt number */
	long long keep_until_ms;    /* kept for want of its row (keep_result); 0: not */
	bool deferred;		    /* kept because the database refused it (defer_results) */
	long long retry_ms;	    /* while kept: not written again before this */
};

/*
 * How many of the held records (oldest first) the next write takes: one
 * while suspects remain, else up to DELIVERY_WRITE_BATCH_MAX, ending with
 * the record that brings the JSON array to DELIVERY_WRITE_BATCH_BYTES;
 * always at least one if any is held.
 */
int delivery_write_take(const struct delivery_record *records, int held, int suspects)
	__attribute__((warn_unused_result));

/*
 * How long the idle writer waits before writing what it holds: records
 * gather for up to DELIVERY_WRITE_GATHER_MS from the oldest's arrival, so
 * that a steady stream of results is written in a few large statements
 * rather than one small statement after another (each complete_deliveries()
 * call costs PostgreSQL several times what a record in it costs). 0: write
 * now, which a full batch, suspects written one by one and a stopping
 * engine always do.
 */
#define DELIVERY_WRITE_GATHER_MS 20
long delivery_write_wait_ms(int held, long oldest_age_ms, int suspects, bool stopping)
	__attribute__((warn_unused_result));

/*
 * A write of the first n held records ended: returns how many of them leave
 * the queue (written, or a lone record refused and given up: its lease
 * expires and the delivery is tried again) and updates *suspects: a
 * refused batch of several records is written again one record at a time.
 * A lost write keeps its records for after the reconnect, and a deferred
 * one for their next try.
 */
int delivery_write_done(enum delivery_write_outcome outcome, int n, int *suspects)
	__attribute__((warn_unused_result));

#endif
