/*
 * Unit tests for common/httpd.c's connection limit: at it, a new
 * connection closes the one waiting on its client the longest, whatever it
 * waits in (a head, a body, an answer the client does not read), and never
 * one whose request is being handled; with only those, the new one is
 * closed. Connections are socketpairs the server adopts as if it had
 * accepted them, with buffers of a few KiB, so that an answer of 4 MiB
 * stays unwritten while its client does not read.
 */
#include "httpd.h"
#include "unit.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BIG (4 * 1024 * 1024)

static struct event_base *base;
static struct httpd_req *held[8]; /* requests of /hold, not answered yet */
static int nheld;

static void handle(struct httpd_req *req, void *arg)
{
	static char *big;
	if (strcmp(httpd_path(req), "/hold") == 0 && nheld < 8) {
		held[nheld++] = req;
		return;
	}
	if (strcmp(httpd_path(req), "/big") == 0) {
		if (!big) {
			big = malloc(BIG);
			memset(big, 'x', BIG);
		}
		httpd_reply(req, 200, "text/plain", big, BIG);
		return;
	}
	httpd_reply(req, 200, "text/plain", "ok", 2);
}

static void pump(void)
{
	for (int i = 0; i < 5; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

/* A new connection the server adopts; returns the client's end, which has sent what. */
static int connect_sending(struct httpd *srv, const char *what)
{
	int fds[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
		abort();
	int small = 4096;
	setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
	httpd_adopt(srv, fds[0], NULL, 0);
	ssize_t n = write(fds[1], what, strlen(what));
	if (n != (ssize_t)strlen(what) && !(n < 0 && errno == EPIPE)) /* EPIPE: closed at once */
		abort();
	pump();
	return fds[1];
}

/* Whether the server closed the client's end fd (what it sent before is read and dropped). */
static bool closed(int fd)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0)
			return false; /* EAGAIN: open, nothing more sent */
	}
}

static struct httpd *server(int max)
{
	signal(SIGPIPE, SIG_IGN);
	if (!base)
		base = event_base_new();
	struct httpd *srv = httpd_new(base, handle, NULL, NULL);
	httpd_configure(srv, 1024 * 1024, 30000);
	httpd_set_max_connections(srv, max);
	return srv;
}

static void answer_held(void)
{
	for (int i = 0; i < nheld; i++)
		httpd_reply(held[i], 200, "text/plain", "late", 4);
	nheld = 0;
	pump();
}

UNIT_TEST(the_one_waiting_on_its_client_the_longest_makes_room)
{
	struct httpd *srv = server(4);
	int unread = connect_sending(srv, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
	int head = connect_sending(srv, "P");
	int body =
		connect_sending(srv, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx");
	int handled = connect_sending(srv, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
	UNIT_CHECK(nheld == 1, "the held request reached the handler: %d", nheld);
	UNIT_CHECK(!closed(head) && !closed(body) && !closed(handled), "all open under the limit");

	/* Each new one closes the oldest waiting: the answer left unread first
	 * (its 4 MiB still in the server), then the head, then the body. */
	int news[3];
	news[0] = connect_sending(srv, "P");
	UNIT_CHECK(closed(unread), "the connection that does not read its answer was not closed");
	UNIT_CHECK(!closed(head) && !closed(body), "another was closed instead");
	news[1] = connect_sending(srv, "P");
	UNIT_CHECK(closed(head), "the connection stopped in its head was not closed");
	UNIT_CHECK(!closed(body), "the body's was closed before the head's");
	news[2] = connect_sending(srv, "P");
	UNIT_CHECK(closed(body), "the connection stopped in its body was not closed");
	UNIT_CHECK(!closed(handled), "the connection whose request is handled was closed");
	for (int i = 0; i < 3; i++)
		UNIT_CHECK(!closed(news[i]), "new connection %d closed", i);

	/* The held request is still answered. */
	answer_held();
	char got[256] = "";
	ssize_t n = read(handled, got, sizeof(got) - 1);
	UNIT_CHECK(n > 0 && strncmp(got, "HTTP/1.1 200 ", 13) == 0, "the held request's answer: %s",
		   n > 0 ? got : strerror(errno));
	close(unread);
	close(head);
	close(body);
	close(handled);
	for (int i = 0; i < 3; i++)
		close(news[i]);
	httpd_free(srv);
}

UNIT_TEST(requests_being_handled_are_never_closed_to_make_room)
{
	struct httpd *srv = server(2);
	int a = connect_sending(srv, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
	int b = connect_sending(srv, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
	UNIT_CHECK(nheld == 2, "both requests reached the handler: %d", nheld);
	int c = connect_sending(srv, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
	UNIT_CHECK(closed(c), "the new connection was kept past the limit");
	UNIT_CHECK(!closed(a) && !closed(b), "a connection whose request is handled was closed");
	answer_held();
	close(a);
	close(b);
	close(c);
	httpd_free(srv);
}

int main(void)
{
	UNIT_RUN(the_one_waiting_on_its_client_the_longest_makes_room);
	UNIT_RUN(requests_being_handled_are_never_closed_to_make_room);
	event_base_free(base);
	return UNIT_DONE();
}
