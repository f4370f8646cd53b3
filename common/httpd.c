/*
 * httpd: see httpd.h.
 *
 * DESIGN. One httpd_conn per accepted socket, on one bufferevent, with one
 * state (enum conn_state) changed only through conn_set_state(), and one
 * timer whose meaning follows the state: the idle limit, the request
 * deadline, the write limit or the lingering close. The parser is
 * incremental and reads only what the state needs, so a pipelined request
 * waits in the input buffer until the one before it is answered.
 *
 * The request (httpd_req) belongs to its connection while it is read; once
 * handed to the handler it belongs to the handler until answered. If the
 * client goes meanwhile the connection is closed at once and the request
 * keeps a NULL conn: the answer is then dropped and the request freed.
 *
 * TLS. A connection accepted while the server has a TLS context takes its
 * SSL object at once (so a context swapped meanwhile does not concern it)
 * and waits, with a plain read event on the socket and no bufferevent
 * yet, for its first byte: a TLS record starts with 0x16 (handshake). Such
 * a connection gets an OpenSSL bufferevent on the socket, accepting, and
 * becomes like any other once libevent reports the handshake done. Any
 * other first byte is a client speaking plain HTTP: it gets a plain
 * bufferevent and, at once, a 400 saying so, and the usual lingering
 * close. The request deadline's timer, armed at accept, runs on through
 * the handshake. Closing after an error answer also ends the TLS stream
 * (close_notify) before shutting the socket's write side.
 */
#include "httpd.h"
#include "buf.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FIELDS 1000
#define LINGER_MS 2000		       /* reading and dropping after an error answer */
#define LINGER_BYTES (4 * 1024 * 1024) /* at most this much dropped */

enum conn_state {
	CONN_HELLO,	/* TLS: from accept to the first byte; a read event, no bufferevent yet;
			   timer: the request deadline, from accept */
	CONN_HANDSHAKE, /* TLS: from a first byte 0x16 to the handshake's end; timer: runs on */
	CONN_IDLE,	/* no byte of a request yet; from accept (TLS: the handshake's end) or an
			   answer written; timer: idle */
	CONN_HEAD,	/* reading the request line and fields; timer: request deadline */
	CONN_BODY,	/* reading the body; timer: request deadline */
	CONN_HANDLING,	/* the handler has the request; reading paused; no timer */
	CONN_WRITING,	/* an answer is being written; timer: write limit */
	CONN_LINGER,	/* answer written, write side shut, dropping input; timer: linger */
};

struct field {
	const char *name, *value; /* borrowed from the request's head */
};

struct httpd_req {
	struct httpd *srv;
	struct httpd_conn *conn; /* borrowed; NULL once the client has gone */
	char *head;		 /* owned: the head's lines, NUL-separated */
	size_t head_len, head_cap;
	const char *method, *target;
	char *path;	      /* owned */
	int minor;	      /* HTTP/1.minor */
	struct field *fields; /* owned array */
	size_t nfields, fields_cap;
	struct evbuffer *body; /* owned */
	struct buf out;	       /* fields of the answer, as lines */
	bool close;	       /* close the connection after the answer */
	bool head_request;
	size_t reserved; /* of the server's bodies (reserve_body) */
};

struct httpd_conn {
	LIST_ENTRY(httpd_conn) link;
	TAILQ_ENTRY(httpd_conn) idle_link; /* in srv->idle while waiting for a first byte */
	bool in_idle;
	TAILQ_ENTRY(httpd_conn) head_link; /* in srv->heads while CONN_HEAD */
	bool in_heads;
	TAILQ_ENTRY(httpd_conn) wait_link; /* in srv->waiting while waiting_on_client() */
	bool in_waiting;
	size_t held; /* bytes of its head held (kept and still in its input), in srv->heads_held */
	struct httpd *srv;
	evutil_socket_t fd;	 /* owned until bev exists, then bev's */
	struct bufferevent *bev; /* owned; NULL while CONN_HELLO */
	struct event *hello;	 /* owned: the first byte's read event, while CONN_HELLO */
	SSL *ssl;		 /* owned while CONN_HELLO, then bev's (or freed: plain HTTP) */
	bool tls;		 /* bev is an OpenSSL bufferevent */
	bool plain_on_tls;	 /* plain HTTP came to the TLS listener: answered 400 */
	char peer[64];		 /* the client's address, for the log */
	struct event *timer;	 /* owned */
	enum conn_state state;
	struct httpd_req *req; /* owned while read; the handler's while handled */
	/* Body framing of the request being read. */
	bool chunked;
	enum { CHUNK_SIZE, CHUNK_DATA, CHUNK_DATA_END, CHUNK_TRAILER } chunk;
	size_t left;	    /* body bytes (or bytes of this chunk) still to read */
	size_t head_bytes;  /* of the head read so far (and trailers) */
	size_t head_lines;  /* lines of the head kept so far */
	size_t scanned;	    /* input bytes searched for the end of a line */
	bool closing;	    /* close once the answer is written */
	bool peer_done;	    /* the client shut its side after its request */
	size_t max_body;    /* as configured when the request started */
	long long deadline; /* ms the request may take, as configured then */
	size_t lingered;
};

/*
 * A failed TLS handshake is logged at most once per HANDSHAKE_LOG_MS for
 * each of up to HANDSHAKE_REASONS reasons (log_quota), and once per
 * HANDSHAKE_LOG_MS for all others together: made-up ClientHellos give a
 * dozen reasons, which must not take the lines of a client refused for a
 * real one (a missing certificate), nor write more than a few a second.
 */
#define HANDSHAKE_LOG_MS 10000
#define HANDSHAKE_REASONS 64
/* Idle connections looked at for one waiting unread, to make room (make_room). */
#define HTTPD_IDLE_LOOK_MAX 64

struct httpd {
	struct event_base *base;
	struct evconnlistener *listener; /* owned */
	struct log_quota too_large;	 /* 413s logged */
	struct event *accept_pause;	 /* owned: the listener rests after accept() fails */
	httpd_handler handle;
	httpd_answered answered;
	void *arg;
	size_t max_body;
	long long request_timeout_ms;
	SSL_CTX *tls; /* a reference of its own; NULL: plain HTTP */
	LIST_HEAD(, httpd_conn) conns;
	int nconns;
	int max_conns;			  /* httpd_set_max_connections; 0: no limit */
	bool full;			  /* the listener is off for want of room */
	TAILQ_HEAD(, httpd_conn) idle;	  /* waiting for a request's first byte, longest first */
	TAILQ_HEAD(, httpd_conn) heads;	  /* reading a request's head, longest first */
	TAILQ_HEAD(, httpd_conn) waiting; /* waiting_on_client(), longest first */
	size_t heads_held;		  /* bytes of heads held by them (HTTPD_HEADS_MAX) */
	size_t bodies; /* bytes of request bodies received and not yet given back */
	/*
	 * Lines about failed TLS handshakes: a quota for each reason (OpenSSL's
	 * library and reason code), open addressing; the last one for every
	 * reason past the table's room.
	 */
	struct {
		unsigned long code; /* 0: free */
		struct log_quota quota;
	} tls_failed[HANDSHAKE_REASONS + 1];
};

static void conn_read(struct httpd_conn *c);

static const char *reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

static void arm(struct httpd_conn *c, long long ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	event_add(c->timer, &tv);
}

static void req_free(struct httpd_req *r)
{
	if (!r)
		return;
	r->srv->bodies -= r->reserved;
	free(r->head);
	free(r->path);
	free(r->fields);
	evbuffer_free(r->body);
	buf_free(&r->out);
	free(r);
}

/* The listener rested at the connection limit (httpd_adopt): it accepts again. */
static void room_again(struct httpd *s)
{
	s->full = false;
	if (s->listener && !evtimer_pending(s->accept_pause, NULL))
		evconnlistener_enable(s->listener);
}

static void conn_free(struct httpd_conn *c)
{
	struct httpd *s = c->srv;
	LIST_REMOVE(c, link);
	if (c->in_idle)
		TAILQ_REMOVE(&s->idle, c, idle_link);
	if (c->in_heads) {
		TAILQ_REMOVE(&s->heads, c, head_link);
		s->heads_held -= c->held;
	}
	if (c->in_waiting)
		TAILQ_REMOVE(&s->waiting, c, wait_link);
	s->nconns--;
	if (s->full && s->nconns < s->max_conns)
		room_again(s);
	if (c->req) {
		if (c->state == CONN_HANDLING)
			c->req->conn = NULL; /* the handler still has it */
		else
			req_free(c->req);
	}
	event_free(c->timer);
	if (c->hello)
		event_free(c->hello);
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->bev)
		bufferevent_free(c->bev);
	else
		evutil_closesocket(c->fd);
	free(c);
}

/*
 * Whether a connection in this state waits for its client to go on, inside
 * a handshake, a request or an answer: the ones make_room() closes after
 * the idle ones. (Idle ones wait too, but between requests; one being
 * handled waits for the handler.)
 */
static bool waiting_on_client(enum conn_state state)
{
	return state == CONN_HANDSHAKE || state == CONN_HEAD || state == CONN_BODY ||
	       state == CONN_WRITING || state == CONN_LINGER;
}

/*
 * Every change of state goes through here, with what the new state needs:
 * reading on or off, and the timer's meaning.
 */
static void conn_set_state(struct httpd_conn *c, enum conn_state state)
{
	c->state = state;
	/* Its place among the waiting is kept from a head to its body, and from
	 * an answer to the lingering close after it: the wait is one. */
	if (c->in_waiting && !waiting_on_client(state)) {
		TAILQ_REMOVE(&c->srv->waiting, c, wait_link);
		c->in_waiting = false;
	} else if (!c->in_waiting && waiting_on_client(state)) {
		TAILQ_INSERT_TAIL(&c->srv->waiting, c, wait_link);
		c->in_waiting = true;
	}
	bool idle = state == CONN_HELLO || state == CONN_IDLE;
	if (c->in_idle)
		TAILQ_REMOVE(&c->srv->idle, c, idle_link);
	if (idle)
		TAILQ_INSERT_TAIL(&c->srv->idle, c, idle_link);
	c->in_idle = idle;
	if (c->in_heads) {
		TAILQ_REMOVE(&c->srv->heads, c, head_link);
		c->srv->heads_held -= c->held;
		c->held = 0;
	}
	if (state == CONN_HEAD)
		TAILQ_INSERT_TAIL(&c->srv->heads, c, head_link);
	c->in_heads = state == CONN_HEAD;
	/* An idle connection is room: the next one may take its place. */
	if (idle && c->srv->full)
		room_again(c->srv);
	/* In these two the deadline runs on, from the request's first byte or the accept. */
	if (state != CONN_BODY && state != CONN_HANDSHAKE)
		event_del(c->timer);
	switch (state) {
	case CONN_HELLO:
		event_add(c->hello, NULL);
		arm(c, c->srv->request_timeout_ms);
		break;
	case CONN_HANDSHAKE:
		bufferevent_enable(c->bev, EV_READ);
		break;
	case CONN_IDLE:
		bufferevent_enable(c->bev, EV_READ);
		arm(c, c->srv->request_timeout_ms);
		break;
	case CONN_HEAD:
		c->max_body = c->srv->max_body;
		c->deadline = c->srv->request_timeout_ms;
		arm(c, c->deadline);
		break;
	case CONN_BODY:
		break;
	case CONN_HANDLING:
		bufferevent_disable(c->bev, EV_READ);
		break;
	case CONN_WRITING:
		bufferevent_disable(c->bev, EV_READ);
		arm(c, c->srv->request_timeout_ms);
		break;
	case CONN_LINGER:
		if (c->tls) {
			/* close_notify: the client sees the end of the stream, not a cut. */
			SSL_shutdown(bufferevent_openssl_get_ssl(c->bev));
			ERR_clear_error();
		}
		shutdown(bufferevent_getfd(c->bev), SHUT_WR);
		bufferevent_enable(c->bev, EV_READ);
		arm(c, LINGER_MS);
		break;
	}
}

/* Appends the answer to the connection's output, or drops it if the client has gone. */
static void send_answer(struct httpd_req *r, int status, const char *content_type, const char *body,
			size_t len)
{
	struct httpd_conn *c = r->conn;
	if (r->srv->answered)
		r->srv->answered(r, status, r->srv->arg);
	if (!c) {
		req_free(r);
		return;
	}
	if (r->minor == 0 && !r->close) {
		/* HTTP/1.0 keeps a connection only when asked to. */
		const char *conn = httpd_header(r, "Connection");
		if (!conn || strcasecmp(conn, "keep-alive") != 0)
			r->close = true;
	}
	if (c->peer_done)
		r->close = true;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %zu\r\n", status,
			    reason(status), date, len);
	if (content_type)
		evbuffer_add_printf(out, "Content-Type: %s\r\n", content_type);
	if (r->out.len)
		evbuffer_add(out, r->out.data, r->out.len);
	if (r->close)
		evbuffer_add_printf(out, "Connection: close\r\n");
	else if (r->minor == 0)
		evbuffer_add_printf(out, "Connection: keep-alive\r\n");
	evbuffer_add(out, "\r\n", 2);
	if (!r->head_request && len)
		evbuffer_add(out, body, len);
	c->closing = r->close;
	c->req = NULL;
	req_free(r);
	/* The write callback moves on when the output has drained. */
	conn_set_state(c, CONN_WRITING);
}

static void error_answer(struct httpd_conn *c, int status, const char *message)
{
	if (!c->req) {
		c->req = xcalloc(1, sizeof(*c->req));
		c->req->srv = c->srv;
		c->req->conn = c;
		c->req->body = evbuffer_new();
		c->req->minor = 1;
	}
	c->req->close = true;
	httpd_reply_error(c->req, status, message);
}

/*
 * 413, said in the log too: a registry sends the same body again and again,
 * and every later event of its queue waits behind it.
 */
static void body_too_large(struct httpd_conn *c)
{
	char msg[96];
	snprintf(msg, sizeof(msg), "request body over %zu bytes", c->max_body);
	/*
	 * Once per 10 s (no token is needed to send one), and not its path: a
	 * callback's holds its token.
	 */
	int held;
	if (log_quota_take(&c->srv->too_large, 10000, &held))
		log_warn("%s: a request body over %zu bytes (max_request_body) refused with "
			 "413%s%.0d%s",
			 c->peer, c->max_body, held ? " (and " : "", held,
			 held ? " more since the last such line)" : "");
	error_answer(c, 413, msg);
}

/*
 * Counts n more bytes of the request's body against HTTPD_BODIES_MAX as
 * they arrive; 503 if over. Not the size declared: connections that
 * declare bodies and send none (no token needed) would hold the room of
 * every registry's posts.
 */
static bool reserve_body(struct httpd_conn *c, size_t n)
{
	struct httpd *s = c->srv;
	size_t max = HTTPD_BODIES_MAX > 2 * c->max_body ? HTTPD_BODIES_MAX : 2 * c->max_body;
	/* Held bodies may pass a max lowered since (max_request_body reloaded). */
	if (s->bodies > max || n > max - s->bodies) {
		httpd_add_header(c->req, "Retry-After", "1");
		error_answer(c, 503, "too many request bodies in memory; retry");
		return false;
	}
	s->bodies += n;
	c->req->reserved += n;
	return true;
}

/* Field-name characters (RFC 9110 token). */
static bool tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Whether [from, to) is a non-empty run of token characters. */
static bool all_tchar(const char *from, const char *to)
{
	for (const char *p = from; p < to; p++)
		if (!tchar((unsigned char)*p))
			return false;
	return from < to;
}

/* Room for a line of len bytes at the end of the request's head, NUL-terminated. */
static char *head_room(struct httpd_req *r, size_t len)
{
	if (r->head_len + len + 1 > r->head_cap) {
		/* Pointers into head are taken only once it is complete. */
		r->head_cap = r->head_cap ? r->head_cap * 2 : 1024;
		while (r->head_cap < r->head_len + len + 1)
			r->head_cap *= 2;
		r->head = xrealloc(r->head, r->head_cap);
	}
	char *at = r->head + r->head_len;
	at[len] = '\0';
	r->head_len += len + 1;
	return at;
}

/* The request line; false with an answer sent. */
static bool parse_request_line(struct httpd_conn *c, char *line)
{
	struct httpd_req *r = c->req;
	char *sp1 = strchr(line, ' ');
	char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == line || sp2 == sp1 + 1) {
		error_answer(c, 400, "malformed request line");
		return false;
	}
	if (!all_tchar(line, sp1)) {
		error_answer(c, 400, "malformed request method");
		return false;
	}
	for (char *p = sp1 + 1; p < sp2; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			error_answer(c, 400, "malformed request target");
			return false;
		}
	const char *version = sp2 + 1;
	if (strncmp(version, "HTTP/", 5) != 0 || strlen(version) != 8 || version[6] != '.' ||
	    version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
		error_answer(c, 400, "malformed HTTP version");
		return false;
	}
	if (version[5] != '1') {
		error_answer(c, 505, "only HTTP/1.0 and HTTP/1.1 are served");
		return false;
	}
	if (sp1[1] != '/') {
		error_answer(c, 400, "the request target must be a path");
		return false;
	}
	*sp1 = *sp2 = '\0';
	r->minor = version[7] - '0';
	r->method = line;
	r->target = sp1 + 1;
	r->path = xstrndup(r->target, strcspn(r->target, "?#"));
	r->head_request = strcmp(r->method, "HEAD") == 0;
	return true;
}

/* A field line "name: value", kept in place; false with an answer sent. */
static bool parse_field(struct httpd_conn *c, char *line)
{
	struct httpd_req *r = c->req;
	if (line[0] == ' ' || line[0] == '\t') {
		error_answer(c, 400, "obsolete line folding in a header field");
		return false;
	}
	char *colon = strchr(line, ':');
	if (!colon || colon == line) {
		error_answer(c, 400, "malformed header field");
		return false;
	}
	if (!all_tchar(line, colon)) {
		error_answer(c, 400, "malformed header field name");
		return false;
	}
	char *value = colon + 1;
	for (unsigned char *p = (unsigned char *)value; *p; p++)
		if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
			error_answer(c, 400, "control character in a header field");
			return false;
		}
	value += strspn(value, " \t");
	size_t n = strlen(value);
	while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
		n--;
	value[n] = '\0';
	*colon = '\0';
	if (r->nfields == r->fields_cap) {
		r->fields_cap = r->fields_cap ? r->fields_cap * 2 : 16;
		r->fields = xrealloc(r->fields, r->fields_cap * sizeof(*r->fields));
	}
	r->fields[r->nfields++] = (struct field){line, value};
	return true;
}

static size_t count_fields(const struct httpd_req *r, const char *name)
{
	size_t n = 0;
	for (size_t i = 0; i < r->nfields; i++)
		n += strcasecmp(r->fields[i].name, name) == 0;
	return n;
}

/*
 * Content-Length: every field, and every element of a list in one, the
 * same plain decimal (RFC 9112 6.3). Returns -1 when there is none, -2
 * when the framing is invalid.
 */
static long long content_length(const struct httpd_req *r)
{
	long long found = -1;
	for (size_t i = 0; i < r->nfields; i++) {
		if (strcasecmp(r->fields[i].name, "Content-Length") != 0)
			continue;
		const char *p = r->fields[i].value;
		for (;;) {
			p += strspn(p, " \t");
			size_t digits = strspn(p, "0123456789");
			if (digits == 0)
				return -2;
			/* Past 18 digits it is over any limit: held at the largest value. */
			long long v = digits > 18 ? LLONG_MAX : strtoll(p, NULL, 10);
			if (found >= 0 && v != found)
				return -2;
			found = v;
			p += digits;
			p += strspn(p, " \t");
			if (*p == '\0')
				break;
			if (*p++ != ',')
				return -2;
		}
	}
	return found;
}

/* The head is complete: decide the framing; false with an answer sent. */
static bool head_done(struct httpd_conn *c)
{
	struct httpd_req *r = c->req;
	/* Fields were kept in r->head, which no longer moves. */
	static const char *const once[] = {"Host", "Content-Type", "Authorization",
					   "Transfer-Encoding"};
	for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++)
		if (count_fields(r, once[i]) > 1) {
			char msg[96];
			snprintf(msg, sizeof(msg), "%s sent more than once", once[i]);
			error_answer(c, 400, msg);
			return false;
		}
	if (r->minor == 1 && count_fields(r, "Host") == 0) {
		error_answer(c, 400, "Host header field missing");
		return false;
	}
	const char *conn = httpd_header(r, "Connection");
	if (conn && strcasestr(conn, "close"))
		r->close = true;
	long long length = content_length(r);
	const char *te = httpd_header(r, "Transfer-Encoding");
	if (length == -2) {
		error_answer(c, 400, "invalid Content-Length");
		return false;
	}
	if (te && (length >= 0 || r->minor == 0)) {
		error_answer(c, 400,
			     length >= 0 ? "both Content-Length and Transfer-Encoding"
					 : "Transfer-Encoding in an HTTP/1.0 request");
		return false;
	}
	if (te && strcasecmp(te, "chunked") != 0) {
		error_answer(c, 501, "transfer codings other than chunked are not supported");
		return false;
	}
	if (length > 0 && (unsigned long long)length > c->max_body) {
		body_too_large(c);
		return false;
	}
	const char *expect = httpd_header(r, "Expect");
	if (expect && strcasecmp(expect, "100-continue") != 0) {
		error_answer(c, 417, "only Expect: 100-continue is understood");
		return false;
	}
	c->chunked = te != NULL;
	c->chunk = CHUNK_SIZE;
	c->left = length > 0 ? (size_t)length : 0;
	/* An HTTP/1.0 client cannot read a 1xx answer: it is not sent one (RFC 9110, 10.1.1). */
	if (expect && r->minor >= 1 && (c->chunked || c->left) &&
	    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
		evbuffer_add_printf(bufferevent_get_output(c->bev),
				    "HTTP/1.1 100 Continue\r\n\r\n");
	return true;
}

/* The head is too long: 414 while still on the request line, else 431. */
static void head_too_long(struct httpd_conn *c)
{
	if (c->head_lines == 0)
		error_answer(c, 414, "request line too long");
	else
		error_answer(c, 431, "request header fields too large");
}

/*
 * Reads head lines into the request; once the empty line ends the head,
 * parses it in place (the lines no longer move). True when the head is
 * complete and valid; *failed when an answer was sent instead.
 */
static bool read_head(struct httpd_conn *c, struct evbuffer *in, bool *failed)
{
	struct httpd_req *r = c->req;
	for (;;) {
		/*
		 * The search resumes where the last one stopped (one byte back,
		 * for a CR whose LF had not come): a line trickled a byte at a
		 * time is scanned once, not once per byte.
		 */
		size_t eol_len;
		struct evbuffer_ptr from;
		evbuffer_ptr_set(in, &from, c->scanned, EVBUFFER_PTR_SET);
		struct evbuffer_ptr eol =
			evbuffer_search_eol(in, &from, &eol_len, EVBUFFER_EOL_CRLF);
		if (c->head_lines == 0 && evbuffer_get_length(in) > 0) {
			/* A request starts with a method: anything else is refused at once. */
			unsigned char first;
			evbuffer_copyout(in, &first, 1);
			if (c->plain_on_tls) {
				error_answer(c, 400,
					     "this port speaks HTTPS only: use an https:// URL");
				*failed = true;
				return false;
			}
			if (first != '\r' && first != '\n' && !tchar(first)) {
				error_answer(c, 400,
					     first == 0x16 ? "a TLS handshake on a plain HTTP port"
							   : "not an HTTP request");
				*failed = true;
				return false;
			}
		}
		if (eol.pos < 0) {
			size_t pending = evbuffer_get_length(in);
			c->scanned = pending ? pending - 1 : 0;
			if (c->head_bytes + pending > HTTPD_MAX_HEAD) {
				head_too_long(c);
				*failed = true;
			}
			return false;
		}
		c->scanned = 0;
		size_t len = (size_t)eol.pos;
		c->head_bytes += len + eol_len;
		if (c->head_bytes > HTTPD_MAX_HEAD) {
			head_too_long(c);
			*failed = true;
			return false;
		}
		if (len == 0 && c->head_lines == 0) {
			/* An empty line before the request line is ignored (RFC 9112 2.2). */
			evbuffer_drain(in, eol_len);
			continue;
		}
		if (len == 0) {
			evbuffer_drain(in, eol_len);
			break;
		}
		if (c->head_lines == MAX_FIELDS + 1) {
			error_answer(c, 431, "too many header fields");
			*failed = true;
			return false;
		}
		char *kept = head_room(r, len);
		evbuffer_remove(in, kept, len);
		evbuffer_drain(in, eol_len);
		if (memchr(kept, '\0', len)) {
			error_answer(c, 400, "NUL byte in the request head");
			*failed = true;
			return false;
		}
		c->head_lines++;
	}
	char *line = r->head;
	for (size_t i = 0; i < c->head_lines; i++) {
		char *next = line + strlen(line) + 1;
		if (!(i == 0 ? parse_request_line(c, line) : parse_field(c, line))) {
			*failed = true;
			return false;
		}
		line = next;
	}
	if (!head_done(c)) {
		*failed = true;
		return false;
	}
	return true;
}

/*
 * Moves n bytes of input to the body by copying: moved whole
 * (evbuffer_remove_buffer), each read's block stays a block of its own,
 * and a body trickled a byte per segment held hundreds of times the bytes
 * reserve_body() counts. Copied, they fill the body's blocks.
 */
static void take_body(struct evbuffer *in, struct evbuffer *body, size_t n)
{
	char chunk[4096];
	while (n > 0) {
		size_t k = n < sizeof(chunk) ? n : sizeof(chunk);
		evbuffer_remove(in, chunk, k);
		evbuffer_add(body, chunk, k);
		n -= k;
	}
}

/* Reads body bytes; true when the body is complete. */
static bool read_body(struct httpd_conn *c, struct evbuffer *in, bool *failed)
{
	struct httpd_req *r = c->req;
	if (!c->chunked) {
		size_t n = evbuffer_get_length(in);
		if (n > c->left)
			n = c->left;
		if (n && !reserve_body(c, n)) {
			*failed = true;
			return false;
		}
		take_body(in, r->body, n);
		c->left -= n;
		return c->left == 0;
	}
	for (;;) {
		if (c->chunk == CHUNK_DATA) {
			size_t n = evbuffer_get_length(in);
			if (n > c->left)
				n = c->left;
			if (n && !reserve_body(c, n)) {
				*failed = true;
				return false;
			}
			take_body(in, r->body, n);
			c->left -= n;
			if (c->left)
				return false;
			c->chunk = CHUNK_DATA_END;
			continue;
		}
		/* As in read_head: a trailer trickled a byte at a time is scanned once. */
		size_t eol_len;
		struct evbuffer_ptr from;
		evbuffer_ptr_set(in, &from, c->scanned, EVBUFFER_PTR_SET);
		struct evbuffer_ptr eol =
			evbuffer_search_eol(in, &from, &eol_len, EVBUFFER_EOL_CRLF);
		if (eol.pos < 0) {
			size_t pending = evbuffer_get_length(in);
			c->scanned = pending ? pending - 1 : 0;
			if (evbuffer_get_length(in) > 1024 && c->chunk != CHUNK_TRAILER) {
				error_answer(c, 400, "malformed chunk");
				*failed = true;
			} else if (c->head_bytes + evbuffer_get_length(in) > HTTPD_MAX_HEAD) {
				error_answer(c, 431, "request trailer fields too large");
				*failed = true;
			}
			return false;
		}
		c->scanned = 0;
		size_t len = (size_t)eol.pos;
		char line[1025];
		if (len >= sizeof(line) && c->chunk != CHUNK_TRAILER) {
			error_answer(c, 400, "malformed chunk");
			*failed = true;
			return false;
		}
		if (c->chunk == CHUNK_TRAILER) {
			c->head_bytes += len + eol_len;
			if (c->head_bytes > HTTPD_MAX_HEAD) {
				error_answer(c, 431, "request trailer fields too large");
				*failed = true;
				return false;
			}
			evbuffer_drain(in, len + eol_len); /* trailers are not used */
			if (len == 0)
				return true;
			continue;
		}
		evbuffer_remove(in, line, len);
		line[len] = '\0';
		evbuffer_drain(in, eol_len);
		if (c->chunk == CHUNK_DATA_END) {
			if (len != 0) {
				error_answer(c, 400, "malformed chunk");
				*failed = true;
				return false;
			}
			c->chunk = CHUNK_SIZE;
			continue;
		}
		/* chunk-size [; extensions] */
		size_t digits = strspn(line, "0123456789abcdefABCDEF");
		char after = line[digits];
		if (digits == 0 || digits > 15 ||
		    (after != '\0' && after != ';' && after != ' ' && after != '\t')) {
			error_answer(c, 400, "malformed chunk size");
			*failed = true;
			return false;
		}
		size_t size = (size_t)strtoull(line, NULL, 16);
		if (size > c->max_body - evbuffer_get_length(r->body)) {
			body_too_large(c);
			*failed = true;
			return false;
		}
		if (size == 0) {
			c->chunk = CHUNK_TRAILER;
			continue;
		}
		c->left = size;
		c->chunk = CHUNK_DATA;
	}
}

/*
 * Counts what c's unfinished head holds against HTTPD_HEADS_MAX: past it,
 * the connections reading a head the longest (not c) are closed. Without
 * it, heads of up to HTTPD_MAX_HEAD each, sent by clients that need no
 * token and never end them, held as much memory as the descriptors allowed
 * connections (4 GiB at the package's 65,536).
 */
static void hold_head(struct httpd_conn *c, size_t bytes)
{
	struct httpd *s = c->srv;
	s->heads_held += bytes - c->held;
	c->held = bytes;
	struct httpd_conn *oldest;
	while (s->heads_held > HTTPD_HEADS_MAX && (oldest = TAILQ_FIRST(&s->heads)) != NULL) {
		if (oldest == c) {
			oldest = TAILQ_NEXT(c, head_link);
			if (!oldest)
				break;
		}
		conn_free(oldest);
	}
}

/* Advances the connection with what its input holds. */
static void conn_read(struct httpd_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	bool failed = false;
	if (c->state == CONN_LINGER) {
		size_t n = evbuffer_get_length(in);
		c->lingered += n;
		evbuffer_drain(in, n);
		if (c->lingered > LINGER_BYTES)
			conn_free(c);
		return;
	}
	if (c->state == CONN_IDLE) {
		if (evbuffer_get_length(in) == 0)
			return;
		c->req = xcalloc(1, sizeof(*c->req));
		c->req->srv = c->srv;
		c->req->conn = c;
		c->req->body = evbuffer_new();
		c->head_bytes = 0;
		c->head_lines = 0;
		c->scanned = 0;
		conn_set_state(c, CONN_HEAD);
	}
	if (c->state == CONN_HEAD) {
		if (!read_head(c, in, &failed)) {
			if (c->state == CONN_HEAD)
				hold_head(c, c->head_bytes + evbuffer_get_length(in));
			return;
		}
		conn_set_state(c, CONN_BODY);
	}
	if (c->state == CONN_BODY) {
		if (!read_body(c, in, &failed))
			return;
		conn_set_state(c, CONN_HANDLING);
		c->srv->handle(c->req, c->srv->arg);
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	conn_read(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct httpd_conn *c = arg;
	if (c->state != CONN_WRITING)
		return; /* a 100 Continue went out */
	if (c->closing) {
		conn_set_state(c, CONN_LINGER);
		conn_read(c);
		return;
	}
	conn_set_state(c, CONN_IDLE);
	conn_read(c); /* a pipelined request may be waiting */
}

/* A handshake that did not end: logged, at debug when the client just went (a port probe). */
static void handshake_failed(struct httpd_conn *c, short what)
{
	unsigned long e = bufferevent_get_openssl_error(c->bev);
	/* OpenSSL 3 reports a client gone mid-handshake as an error of its own. */
	bool went =
		(what & BEV_EVENT_EOF) || (ERR_GET_LIB(e) == ERR_LIB_SSL &&
					   ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	int held = 0;
	if (reason && !went) {
		/* Anyone can fail one (3,000 lines a second from one client). */
		unsigned long code =
			((unsigned long)ERR_GET_LIB(e) << 24) | ERR_GET_REASON(e) | 1ul << 31;
		size_t i = code % HANDSHAKE_REASONS, probes = 0;
		while (probes < HANDSHAKE_REASONS && c->srv->tls_failed[i].code &&
		       c->srv->tls_failed[i].code != code) {
			i = (i + 1) % HANDSHAKE_REASONS;
			probes++;
		}
		bool other = probes == HANDSHAKE_REASONS;
		if (other)
			i = HANDSHAKE_REASONS;
		else
			c->srv->tls_failed[i].code = code;
		if (!log_quota_take(&c->srv->tls_failed[i].quota, HANDSHAKE_LOG_MS, &held))
			held = -1;
		if (held > 0)
			log_info("TLS handshake with %s failed: %s (and %d more failed%s since the "
				 "last such line)",
				 c->peer, reason, held, other ? ", for other reasons," : "");
		else if (held == 0)
			log_info("TLS handshake with %s failed: %s", c->peer, reason);
	} else
		log_debug("TLS handshake with %s not completed: %s", c->peer,
			  went ? "the client closed the connection" : "connection error");
	ERR_clear_error();
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct httpd_conn *c = arg;
	if (c->state == CONN_HANDSHAKE) {
		if (what & BEV_EVENT_CONNECTED) {
			conn_set_state(c, CONN_IDLE);
			return;
		}
		handshake_failed(c, what);
		conn_free(c);
		return;
	}
	/*
	 * A client may shut its side once its request is sent, and still read
	 * the answer; any other end, or an error, closes the connection (a
	 * request being handled goes on without its client).
	 */
	if ((what & BEV_EVENT_EOF) && (c->state == CONN_HANDLING || c->state == CONN_WRITING)) {
		c->peer_done = true;
		c->closing = true;
		return;
	}
	conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct httpd_conn *c = arg;
	switch (c->state) {
	case CONN_HEAD:
	case CONN_BODY:
		error_answer(c, 408, "request not received in time");
		break;
	default: /* idle, an answer not read, lingering over */
		conn_free(c);
	}
}

/* The connection's bufferevent is ready: from here on it reads through it. */
static void conn_start(struct httpd_conn *c, struct bufferevent *bev, enum conn_state state)
{
	c->bev = bev;
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	conn_set_state(c, state);
}

/* TLS listener: the first byte tells a TLS handshake (0x16) from plain HTTP. */
static void on_hello(evutil_socket_t fd, short what, void *arg)
{
	struct httpd_conn *c = arg;
	unsigned char first;
	ssize_t n = recv(fd, &first, 1, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		event_add(c->hello, NULL);
		return;
	}
	if (n <= 0) {
		conn_free(c); /* gone before a byte: nothing to answer */
		return;
	}
	event_free(c->hello);
	c->hello = NULL;
	if (first == 0x16) {
		struct bufferevent *bev = bufferevent_openssl_socket_new(
			c->srv->base, fd, c->ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		if (!bev) {
			conn_free(c);
			return;
		}
		c->ssl = NULL; /* the bufferevent's now */
		c->tls = true;
		/* A client that closes without close_notify has ended, as over plain TCP. */
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
		conn_start(c, bev, CONN_HANDSHAKE);
		return;
	}
	SSL_free(c->ssl);
	c->ssl = NULL;
	c->plain_on_tls = true;
	conn_start(c, bufferevent_socket_new(c->srv->base, fd, BEV_OPT_CLOSE_ON_FREE), CONN_IDLE);
}

/*
 * Whether an idle connection's client has sent bytes this process has not
 * read yet: accepted in a burst, a connection stays idle until the loop
 * gets to it. (One the client closed has not: it goes first.)
 */
static bool sent_unread(struct httpd_conn *c)
{
	if (c->bev && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
		return true;
	char byte;
	ssize_t n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	return n > 0;
}

/*
 * Room for one more connection under max_conns: the connection waiting
 * longest for a request's first byte is closed to make it (one that sent
 * nothing, or a kept-alive one between requests); with none, the one
 * waiting on its client the longest inside a handshake, a request or an
 * answer (none of which needs a token); with none of those either (every
 * connection's request is being handled), no room.
 */
static bool make_room(struct httpd *s)
{
	if (s->max_conns == 0 || s->nconns < s->max_conns)
		return true;
	/* One whose first bytes wait unread is not idle: taken for idle, a
	 * registry's connection that came in a flood of others was closed by
	 * the next one of the flood, before its head was read. */
	struct httpd_conn *oldest = NULL, *unread = NULL;
	int looked = 0;
	TAILQ_FOREACH(oldest, &s->idle, idle_link) {
		if (!sent_unread(oldest))
			break;
		if (!unread)
			unread = oldest;
		/* A bounded look: past it, the waiting ones' turn. */
		if (++looked == HTTPD_IDLE_LOOK_MAX) {
			oldest = NULL;
			break;
		}
	}
	/* Else the one waiting on its client the longest: a registry sends its
	 * request at once and reads its answer, and a head or a body sent a byte
	 * at a time, a handshake begun and left, or an answer left unread would
	 * keep every other client out. Then the one waiting longest to be read. */
	if (!oldest)
		oldest = TAILQ_FIRST(&s->waiting);
	if (!oldest)
		oldest = unread;
	if (!oldest)
		return false;
	conn_free(oldest);
	return true;
}

void httpd_adopt(struct httpd *s, evutil_socket_t fd, const struct sockaddr *sa, int socklen)
{
	if (!make_room(s)) {
		/* Every connection is inside a request: this one waits for one to end. */
		evutil_closesocket(fd);
		if (s->listener && !s->full) {
			s->full = true;
			evconnlistener_disable(s->listener);
		}
		return;
	}
	struct httpd_conn *c = xcalloc(1, sizeof(*c));
	c->srv = s;
	c->fd = fd;
	c->timer = evtimer_new(s->base, on_timer, c);
	char host[INET6_ADDRSTRLEN], port[8];
	if (sa && getnameinfo(sa, (socklen_t)socklen, host, sizeof(host), port, sizeof(port),
			      NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(c->peer, sizeof(c->peer), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
			 port);
	LIST_INSERT_HEAD(&s->conns, c, link);
	s->nconns++;
	if (!s->tls) {
		conn_start(c, bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE),
			   CONN_IDLE);
		return;
	}
	c->ssl = SSL_new(s->tls);
	if (!c->ssl) {
		ERR_clear_error();
		conn_free(c);
		return;
	}
	c->hello = event_new(s->base, fd, EV_READ, on_hello, c);
	conn_set_state(c, CONN_HELLO);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
		      int socklen, void *arg)
{
	httpd_adopt(arg, fd, sa, socklen);
}

/*
 * accept() failed, typically out of file descriptors (EMFILE) with the
 * connection still queued: the listener would be woken again at once, for
 * ever. It rests a moment instead, while open connections finish.
 */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct httpd *s = arg;
	evconnlistener_disable(l);
	struct timeval rest = {0, 100000};
	event_add(s->accept_pause, &rest);
}

static void on_accept_pause(evutil_socket_t fd, short what, void *arg)
{
	struct httpd *s = arg;
	if (s->listener && !s->full)
		evconnlistener_enable(s->listener);
}

void httpd_set_max_connections(struct httpd *s, int max)
{
	s->max_conns = max > 0 ? max : 0;
	if (s->full && (s->max_conns == 0 || s->nconns < s->max_conns))
		room_again(s);
}

struct httpd *httpd_new(struct event_base *base, httpd_handler handle, httpd_answered answered,
			void *arg)
{
	struct httpd *s = xcalloc(1, sizeof(*s));
	s->base = base;
	s->handle = handle;
	s->answered = answered;
	s->arg = arg;
	s->max_body = 1024 * 1024;
	s->request_timeout_ms = 30000;
	s->accept_pause = evtimer_new(base, on_accept_pause, s);
	LIST_INIT(&s->conns);
	TAILQ_INIT(&s->idle);
	TAILQ_INIT(&s->heads);
	TAILQ_INIT(&s->waiting);
	return s;
}

void httpd_configure(struct httpd *s, size_t max_body, long long request_timeout_ms)
{
	s->max_body = max_body;
	s->request_timeout_ms = request_timeout_ms;
}

bool httpd_listen(struct httpd *s, const char *host, int port, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	char service[16];
	snprintf(service, sizeof(service), "%d", port);
	int rc = getaddrinfo(*host ? host : NULL, service, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "%s", gai_strerror(rc));
		return false;
	}
	s->listener = evconnlistener_new_bind(s->base, on_accept, s,
					      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
						      LEV_OPT_CLOSE_ON_EXEC,
					      -1, res->ai_addr, (int)res->ai_addrlen);
	int saved = errno;
	freeaddrinfo(res);
	if (!s->listener) {
		snprintf(err, errlen, "%s", strerror(saved));
		return false;
	}
	evconnlistener_set_error_cb(s->listener, on_accept_error);
	return true;
}

void httpd_set_tls(struct httpd *s, SSL_CTX *ctx)
{
	if (ctx)
		SSL_CTX_up_ref(ctx);
	SSL_CTX_free(s->tls);
	s->tls = ctx;
}

void httpd_stop_listening(struct httpd *s)
{
	if (s->listener)
		evconnlistener_free(s->listener);
	s->listener = NULL;
}

void httpd_free(struct httpd *s)
{
	if (!s)
		return;
	httpd_stop_listening(s);
	while (!LIST_EMPTY(&s->conns)) {
		struct httpd_conn *c = LIST_FIRST(&s->conns);
		if (c->state == CONN_HANDLING && c->req) {
			req_free(c->req); /* its handler is being freed too */
			c->req = NULL;
		}
		conn_free(c);
	}
	SSL_CTX_free(s->tls);
	event_free(s->accept_pause);
	free(s);
}

const char *httpd_peer(const struct httpd_req *req)
{
	return req->conn ? req->conn->peer : "";
}

const char *httpd_method(const struct httpd_req *req)
{
	return req->method ? req->method : "";
}

const char *httpd_path(const struct httpd_req *req)
{
	return req->path ? req->path : "";
}

const char *httpd_header(const struct httpd_req *req, const char *name)
{
	for (size_t i = 0; i < req->nfields; i++)
		if (strcasecmp(req->fields[i].name, name) == 0)
			return req->fields[i].value;
	return NULL;
}

const char *httpd_body(struct httpd_req *req, size_t *len)
{
	*len = evbuffer_get_length(req->body);
	const char *p = (const char *)evbuffer_pullup(req->body, -1);
	return p ? p : "";
}

size_t httpd_body_length(const struct httpd_req *req)
{
	return evbuffer_get_length(req->body);
}

void httpd_body_discard(struct httpd_req *req)
{
	evbuffer_drain(req->body, evbuffer_get_length(req->body));
	req->srv->bodies -= req->reserved;
	req->reserved = 0;
}

void httpd_add_header(struct httpd_req *req, const char *name, const char *value)
{
	buf_printf(&req->out, "%s: %s\r\n", name, value);
}

void httpd_close_after(struct httpd_req *req)
{
	req->close = true;
}

void httpd_reply(struct httpd_req *req, int status, const char *content_type, const char *body,
		 size_t len)
{
	send_answer(req, status, content_type, body, len);
}

void httpd_reply_json(struct httpd_req *req, int status, const char *json)
{
	struct buf b = BUF_INIT;
	buf_puts(&b, json);
	buf_putc(&b, '\n');
	send_answer(req, status, "application/json", b.data, b.len);
	buf_free(&b);
}

void httpd_reply_error(struct httpd_req *req, int status, const char *message)
{
	struct buf b = BUF_INIT;
	buf_puts(&b, "{\"error\":");
	buf_json_str(&b, message, strlen(message));
	buf_puts(&b, "}");
	httpd_reply_json(req, status, b.data);
	buf_free(&b);
}
