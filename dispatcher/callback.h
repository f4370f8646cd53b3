/*
 * callback: POST /callback/<token>, Docker Hub's callback. An endpoint
 * that received a delivery reports back through its callback_url with
 * {"state": "success"|"failure"|"error", "description", "context",
 * "target_url"}. The body is checked here (strict JSON of at most 64 KiB,
 * fields null or strings of at most 4096 bytes) and recorded by
 * reghook.record_callback() on the delivery the token names: 200, 404 for
 * an unknown token, 503 while the database is unreachable.
 */
#ifndef REGHOOK_CALLBACK_H
#define REGHOOK_CALLBACK_H

struct daemon;
struct httpd_req;

/* Handles one POST /callback/<token>; token is the path after the prefix. */
void callback_handle(struct daemon *d, struct httpd_req *req, const char *token);

#endif
