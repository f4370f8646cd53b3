/*
 * reply: the answers the daemon's request handlers share, on top of
 * httpd_reply*(): "come back later" (503 with Retry-After) and an error
 * whose message is formatted. Used by the routes (http.c), POST /events
 * (ingest.c) and POST /callback (callback.c), so that none of them calls
 * into another for its answers.
 */
#ifndef REGHOOK_REPLY_H
#define REGHOOK_REPLY_H

struct httpd_req;

/* Seconds a client is asked to wait while the database is unreachable. */
#define REPLY_RETRY_DOWN "5"

/* 503 {"error": why} with Retry-After: retry_after (seconds). */
void reply_unavailable(struct httpd_req *req, const char *retry_after, const char *why);

/* {"error": message} with the status, the message formatted as by printf. */
void reply_errorf(struct httpd_req *req, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
