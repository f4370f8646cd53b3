/*
 * libFuzzer harness for common/httpd.c: any bytes as what one client sends
 * on one connection, through a socketpair the server adopts as if it had
 * accepted it. The first byte picks how: bit 0, the client shuts its write
 * side after sending; bit 1, the handler answers each request only after
 * the loop has run on (a database commit's wait); bit 2, a body limit of
 * 64 bytes instead of 1 MiB; bit 3, the client closes before those late
 * answers go. The second byte is how many bytes each write carries (1 to
 * 256, with the loop run between writes, for the first 256 writes), so
 * the incremental parser meets lines and chunks cut anywhere. The rest is
 * the stream.
 *
 * The server must get through every input without a sanitizer report or a
 * leak, hand the handler only complete requests whose accessors work, and
 * write nothing before an HTTP/1.1 status line.
 */
#include "httpd.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OUT (1 << 20)

static struct event_base *base;

struct run {
	struct httpd_req *late; /* a request whose answer waits (bit 1) */
	bool defer;
	int handled;
	char *out; /* what the client read */
	size_t out_len;
};

static void handle(struct httpd_req *req, void *arg)
{
	struct run *run = arg;
	size_t len;
	const char *body = httpd_body(req, &len);
	/* Every accessor of a complete request works; the body is contiguous. */
	if (!body || strlen(httpd_method(req)) == 0 || httpd_path(req)[0] != '/')
		abort();
	size_t sum = 0; /* every byte read, for the sanitizer */
	for (size_t i = 0; i < len; i++)
		sum += (unsigned char)body[i];
	(void)httpd_header(req, "Host");
	(void)httpd_header(req, "Content-Type");
	run->handled++;
	if (run->defer && !run->late) {
		run->late = req;
		return;
	}
	if (strstr(httpd_path(req), "close"))
		httpd_close_after(req);
	httpd_add_header(req, "X-Fuzz", "1");
	char answer[96];
	int n = snprintf(answer, sizeof(answer), "{\"bytes\":%zu,\"sum\":%zu}", len, sum);
	httpd_reply(req, 200, "application/json", answer, (size_t)n);
}

static void drain_client(int fd, struct run *run)
{
	char chunk[4096];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n <= 0)
			return;
		if (run->out_len + (size_t)n <= MAX_OUT) {
			memcpy(run->out + run->out_len, chunk, (size_t)n);
			run->out_len += (size_t)n;
		}
	}
}

static void pump(int client, struct run *run)
{
	for (int i = 0; i < 3; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (client >= 0)
			drain_client(client, run);
	}
}

static void answer_late(struct run *run)
{
	struct httpd_req *req = run->late;
	run->late = NULL;
	httpd_reply_error(req, 503, "late");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	if (!base) {
		signal(SIGPIPE, SIG_IGN);
		base = event_base_new();
	}
	uint8_t flags = data[0];
	size_t step = (size_t)data[1] + 1;
	data += 2;
	size -= 2;

	struct run run = {.defer = flags & 2, .out = malloc(MAX_OUT)};
	struct httpd *srv = httpd_new(base, handle, NULL, &run);
	httpd_configure(srv, flags & 4 ? 64 : 1024 * 1024, 30000);
	int fds[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
		abort();
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
	httpd_adopt(srv, fds[0], NULL, 0);
	int client = fds[1];

	for (size_t at = 0, writes = 0, stalls = 0; at < size && stalls < 64; writes++) {
		/* Cut into steps for the first 256 writes; the rest goes at once. */
		size_t n = size - at < step || writes >= 256 ? size - at : step;
		ssize_t w = write(client, data + at, n);
		if (w < 0 && errno != EAGAIN)
			break; /* the server closed: the rest is not read */
		if (w > 0)
			at += (size_t)w;
		else
			stalls++; /* the server reads no more: give up the rest */
		pump(client, &run);
		for (int i = 0; run.late && !(flags & 8) && i < 64; i++) {
			answer_late(&run);
			pump(client, &run);
		}
	}
	if (flags & 1)
		shutdown(client, SHUT_WR);
	pump(client, &run);
	if (flags & 8) {
		close(client);
		client = -1;
		pump(client, &run);
	}
	for (int i = 0; run.late && i < 1024; i++) {
		answer_late(&run);
		pump(client, &run);
	}
	if (run.late)
		answer_late(&run);
	pump(client, &run);

	/* Nothing of the server's comes before a status line. */
	if (run.out_len > 0 && (run.out_len < 9 || memcmp(run.out, "HTTP/1.1 ", 9) != 0))
		abort();
	if (client >= 0)
		close(client);
	httpd_free(srv);
	event_base_loop(base, EVLOOP_NONBLOCK);
	free(run.out);
	return 0;
}
