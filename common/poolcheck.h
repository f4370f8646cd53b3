/*
 * poolcheck: finds out, before a daemon relies on it, whether its
 * database connections keep their server session from one transaction to
 * the next, as a direct connection to PostgreSQL and a pooler in session
 * mode do, or whether a pooler hands server sessions from client to client
 * between transactions (PgBouncer's transaction or statement pooling),
 * where LISTEN, session-level advisory locks and session settings do not
 * hold.
 *
 * It runs on two connections of its own and reports once, from the event
 * loop; a connection lost on the way starts it again.
 */
#ifndef REGHOOK_POOLCHECK_H
#define REGHOOK_POOLCHECK_H

#include <event2/event.h>
#include <stdbool.h>

struct poolcheck;

/*
 * shared: false when every round saw each connection keep its session;
 * true, with what was seen in detail, when sessions changed hands.
 */
typedef void (*poolcheck_done_fn)(bool shared, const char *detail, void *arg);

/* timeout_ms: the deadline of each probe query (0 for none). */
struct poolcheck *poolcheck_start(struct event_base *base, const char *conninfo, int timeout_ms,
				  poolcheck_done_fn done, void *arg);
/* May be called from the done callback. */
void poolcheck_free(struct poolcheck *p);

#endif
