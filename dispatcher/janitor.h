/*
 * janitor: prunes the delivery history. Every ten minutes, and once when
 * the schema first becomes current, it deletes what history_retention
 * allows (reghook.prune_history(): finished deliveries and their attempts
 * older than the retention), in small batches, one after another, until
 * nothing old is left, so that no statement holds locks for long; one
 * round at a time.
 *
 * It owns no connection: it borrows the delivery engine's write connection,
 * whose owner tells it when that connection comes up. Its batches then queue
 * behind the attempt records, and a prune never takes a connection from
 * the claims or the receiver.
 */
#ifndef REGHOOK_JANITOR_H
#define REGHOOK_JANITOR_H

struct daemon;
struct janitor;
struct pgc;

/* conn is borrowed and must outlive the janitor's queries (free the janitor after it). */
struct janitor *janitor_new(struct daemon *d, struct pgc *conn);
void janitor_free(struct janitor *j);
/* The schema is current: prune from now on (at once, the first time). */
void janitor_start(struct janitor *j);
/* The connection came up: a prune that found it down runs now. */
void janitor_connected(struct janitor *j);
/* No new batches. */
void janitor_stop(struct janitor *j);

#endif
