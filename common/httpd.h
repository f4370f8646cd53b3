/*
 * httpd: a small HTTP/1.1 server on libevent bufferevents, for daemons
 * whose clients are programs (a registry, a webhook endpoint reporting
 * back) and whose attackers hold a valid token. It reads requests strictly
 * (RFC 9112), answers every error of its own as JSON {"error": "..."},
 * and bounds what a client can cost:
 *
 * - the head (request line and fields) within HTTPD_MAX_HEAD bytes (431);
 *   a request line alone within it too (414); unfinished heads of all
 *   connections within HTTPD_HEADS_MAX, past which those reading a head
 *   the longest are closed;
 * - the connections within the connection limit: a new one closes the one
 *   idle the longest, or else the one waiting on its client the longest
 *   inside a TLS handshake, a request's head or body, or an answer;
 * - the body within max_body, refused with 413 as soon as a declared
 *   Content-Length or the chunks so far pass it, without reading the rest;
 * - the bodies of all requests at once within HTTPD_BODIES_MAX (or twice
 *   max_body, if more), counted as they are declared (a Content-Length, a
 *   chunk's size) and given back when the request ends or its handler
 *   discards the body: past it, 503 with Retry-After: 1, so that many
 *   connections cannot hold a megabyte each without limit;
 * - the whole request, head and body, within request_timeout from its
 *   first byte (408), however slowly it trickles; an idle kept-alive
 *   connection is closed after the same time, and an answer the client
 *   does not read is given up after it too;
 * - framing that two readers could take differently is refused (400):
 *   Content-Length values that differ or are not plain decimals, both
 *   Content-Length and Transfer-Encoding, a field sent twice that may
 *   occur once (Host, Content-Type, Authorization), obs-fold, whitespace
 *   before a colon, control characters in a field. Transfer codings other
 *   than chunked get 501.
 *
 * After an error answer the connection is closed gracefully: the write
 * side is shut down and what the client still sends is read and dropped
 * for a short while, so that it sees the answer rather than a reset.
 *
 * A request is handed to the handler once complete; the handler answers
 * it with httpd_reply*() at once or later (after a database commit, say).
 * A request is valid until answered, even if its client has gone. Requests
 * of one connection are answered in order: the next is not read before.
 *
 * With a TLS context (httpd_set_tls) the listener speaks HTTPS only,
 * through libevent's OpenSSL bufferevents, so that no handshake blocks the
 * loop; all of the above holds unchanged inside the TLS stream. The
 * handshake must end within request_timeout of the accept, as a request
 * must. A client that speaks plain HTTP to it gets a 400 in clear text
 * saying that the port wants HTTPS, and the connection closes. A new
 * context serves the connections accepted from then on; open ones keep
 * theirs until they close.
 */
#ifndef REGHOOK_HTTPD_H
#define REGHOOK_HTTPD_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define HTTPD_MAX_HEAD (64 * 1024)
/* Unfinished heads held at once, all connections together (httpd.c: hold_head). */
#define HTTPD_HEADS_MAX (64u * 1024 * 1024)
#define HTTPD_BODIES_MAX (256u * 1024 * 1024)

struct httpd;
struct httpd_req;

/* A complete request; answer it with httpd_reply*(), now or later. */
typedef void (*httpd_handler)(struct httpd_req *req, void *arg);
/* An answer was queued: for metrics and logs; req's accessors still work. */
typedef void (*httpd_answered)(const struct httpd_req *req, int status, void *arg);

struct httpd *httpd_new(struct event_base *base, httpd_handler handle, httpd_answered answered,
			void *arg);
/* Limits for requests that start from now on. */
void httpd_configure(struct httpd *s, size_t max_body, long long request_timeout_ms);
/*
 * At most max connections open at once (0: no limit): at the limit, a new
 * one closes the connection that has waited longest for a request's first
 * byte, or, when every connection is inside a request, is closed itself
 * and the listener rests until one ends. Connections that send nothing
 * then cannot take every file descriptor from the database and the
 * deliveries.
 */
void httpd_set_max_connections(struct httpd *s, int max);
/* Listens on host:port (host a name or address, IPv6 without brackets). */
bool httpd_listen(struct httpd *s, const char *host, int port, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/*
 * Serves HTTPS with ctx to the connections accepted from now on, or plain
 * HTTP with NULL. The server takes a reference of its own (the caller
 * keeps its one); connections already open keep the context they began
 * with.
 */
void httpd_set_tls(struct httpd *s, SSL_CTX *ctx);
/*
 * Serves a connected, non-blocking socket as one the listener accepted
 * (the server owns fd from now on); sa names the peer for the log, or is
 * NULL. The listener's own path, and the fuzz harness's (a socketpair).
 */
void httpd_adopt(struct httpd *s, evutil_socket_t fd, const struct sockaddr *sa, int socklen);
/* Accepts no new connections; those open carry on. */
void httpd_stop_listening(struct httpd *s);
/* Closes every connection; requests not yet answered are freed unanswered. */
void httpd_free(struct httpd *s);

const char *httpd_method(const struct httpd_req *req);
/* The client's address and port, as the log names it ("" once it has gone). */
const char *httpd_peer(const struct httpd_req *req);
/* The path of the request target, without its query. */
const char *httpd_path(const struct httpd_req *req);
/* The first field of that name (case-insensitive), or NULL. */
const char *httpd_header(const struct httpd_req *req, const char *name);
/* The body, contiguous; *len its length. Never NULL. */
const char *httpd_body(struct httpd_req *req, size_t *len);
/* Its length, without making it contiguous (a copy, for a body in pieces). */
size_t httpd_body_length(const struct httpd_req *req);
/* Frees the body of a request whose answer waits (what httpd_body gave is gone). */
void httpd_body_discard(struct httpd_req *req);

/* A field for the answer; name and value must be valid field text. */
void httpd_add_header(struct httpd_req *req, const char *name, const char *value);
/* The connection closes after this answer (Connection: close). */
void httpd_close_after(struct httpd_req *req);
/* Sends the answer; req is freed and must not be used again. */
void httpd_reply(struct httpd_req *req, int status, const char *content_type, const char *body,
		 size_t len);
/* A complete JSON text as the body (a newline is added). */
void httpd_reply_json(struct httpd_req *req, int status, const char *json);
/* {"error": message}. */
void httpd_reply_error(struct httpd_req *req, int status, const char *message);

#endif
