/*
 * Unit tests for common/pgc.c that need no PostgreSQL: the settings pgc
 * adds to a connection string, read back from real libpq connections (to
 * a closed loopback port) so that libpq's own precedence is what is
 * checked; a connection string libpq refuses; and the asynchronous
 * connect moving on from a host that accepts TCP but never answers to the
 * next host once connect_timeout has passed. The integration tests
 * (test_failover.py) do the rest against real servers.
 */
#include "pgc.h"
#include "unit.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The value of keyword in conn's settings, copied into out ("" when unset). */
static const char *setting(PGconn *conn, const char *keyword, char *out, size_t len)
{
	PQconninfoOption *opts = PQconninfo(conn);
	snprintf(out, len, "%s", "");
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, keyword) == 0 && o->val)
			snprintf(out, len, "%s", o->val);
	PQconninfoFree(opts);
	return out;
}

#define CHECK_SETTING(conn, keyword, want)                                                         \
	do {                                                                                       \
		char got_[256];                                                                    \
		UNIT_CHECK(unit_streq(setting(conn, keyword, got_, sizeof(got_)), want),           \
			   "%s: %s is \"%s\", want \"%s\"", PQdb(conn), keyword, got_, want);      \
	} while (0)

/* Connects to url with pgc's defaults and checks the settings libpq ended with. */
static void check_settings(const char *url, const char *const want[][2])
{
	PGconn *conn = pgc_connectdb(url);
	UNIT_CHECK(PQstatus(conn) == CONNECTION_BAD, "%s: connected to port 1?", url);
	for (int i = 0; want[i][0]; i++)
		CHECK_SETTING(conn, want[i][0], want[i][1]);
	PQfinish(conn);
}

UNIT_TEST(defaults_fill_in)
{
	static const char *const want[][2] = {
		{"keepalives", "1"},
		{"keepalives_idle", "5"},
		{"keepalives_interval", "2"},
		{"keepalives_count", "3"},
		{"tcp_user_timeout", "10000"},
		{"connect_timeout", "5"},
		{"target_session_attrs", "read-write"},
		{"dbname", "x"},
		{"user", "u"},
		{NULL, NULL},
	};
	check_settings("postgresql://u@127.0.0.1:1/x", want);
}

UNIT_TEST(url_settings_win)
{
	static const char *const url[][2] = {
		{"keepalives_idle", "30"},
		{"target_session_attrs", "any"},
		{"connect_timeout", "2"},
		{"keepalives_interval", "2"}, /* not in the URL: the default */
		{NULL, NULL},
	};
	check_settings("postgresql://u@127.0.0.1:1/x?keepalives_idle=30&"
		       "target_session_attrs=any&connect_timeout=2",
		       url);
	/* The keyword form too. */
	static const char *const keywords[][2] = {
		{"tcp_user_timeout", "2500"},		{"keepalives", "0"}, {"dbname", "y"},
		{"target_session_attrs", "read-write"}, {NULL, NULL},
	};
	check_settings("host=127.0.0.1 port=1 dbname=y tcp_user_timeout=2500 keepalives=0",
		       keywords);
}

UNIT_TEST(environment_wins_over_defaults)
{
	setenv("PGTARGETSESSIONATTRS", "primary", 1);
	setenv("PGCONNECT_TIMEOUT", "7", 1);
	static const char *const env[][2] = {
		{"target_session_attrs", "primary"},
		{"connect_timeout", "7"},
		{NULL, NULL},
	};
	check_settings("postgresql://u@127.0.0.1:1/x", env);
	/* ... and the URL over the environment, as libpq has it. */
	static const char *const url[][2] = {{"connect_timeout", "3"}, {NULL, NULL}};
	check_settings("postgresql://u@127.0.0.1:1/x?connect_timeout=3", url);
	unsetenv("PGTARGETSESSIONATTRS");
	unsetenv("PGCONNECT_TIMEOUT");
}

UNIT_TEST(bad_strings_are_refused_by_libpq)
{
	const char *bad[] = {"postgresql://u@[::1/x", "host=a port", "postgresql://u@h/x?nosuch=1",
			     "postgresql://u@a,b/x?port=1,2,3"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		PGconn *conn = pgc_connectdb(bad[i]);
		UNIT_CHECK(PQstatus(conn) == CONNECTION_BAD, "%s connected", bad[i]);
		UNIT_CHECK(*PQerrorMessage(conn) != '\0', "%s: no error message", bad[i]);
		PQfinish(conn);
	}
}

/* A loopback TCP listener that never accepts: the handshake completes, no answer comes. */
static int silent_listener(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {0};
	socklen_t len = sizeof(sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 8) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

struct round {
	struct event_base *base;
	char why[1024];
	int downs, ups;
};

static void on_up(struct pgc *c, void *arg)
{
	struct round *r = arg;
	r->ups++;
	event_base_loopexit(r->base, NULL);
}

static void on_down(struct pgc *c, const char *why, void *arg)
{
	struct round *r = arg;
	if (r->downs++ == 0)
		snprintf(r->why, sizeof(r->why), "%s", why);
	event_base_loopexit(r->base, NULL);
}

static void on_lost(struct pgc *c, PGresult *res, void *arg)
{
	*(int *)arg = res == NULL ? 1 : 2;
}

/*
 * One round of a pgc on "127.0.0.1:<a silent listener>,<second>", with a
 * query queued, to its end: the round gives up the first host after
 * connect_timeout and goes on to the second (given as it shows in the
 * reason, second_label), where nothing answers either. Checks that, and
 * returns the pgc for more checks (the caller frees it, r->base and fd).
 */
static struct pgc *silent_first_round(const char *second, const char *second_label, struct round *r,
				      int *fd, int *answered)
{
	int port;
	*fd = silent_listener(&port);
	UNIT_CHECK(*fd >= 0, "no loopback listener");
	if (*fd < 0)
		return NULL;
	char url[256];
	snprintf(url, sizeof(url),
		 "postgresql://u@127.0.0.1:%d,%s/x?connect_timeout=2&keepalives=0", port, second);
	*r = (struct round){event_base_new(), "", 0, 0};
	static const struct pgc_hooks hooks = {.up = on_up, .down = on_down};
	struct pgc *c = pgc_new(r->base, url, &hooks, r);
	pgc_set_query_timeout(c, 1000);
	pgc_query(c, "SELECT 1", 0, NULL, on_lost, answered);
	/* A backstop: the round ends after about 2 s; a hang fails here. */
	struct timeval limit = {30, 0};
	event_base_loopexit(r->base, &limit);
	event_base_dispatch(r->base);
	UNIT_CHECK(r->downs == 1 && r->ups == 0, "downs %d, ups %d", r->downs, r->ups);
	char first[64], then[64];
	snprintf(first, sizeof(first), "127.0.0.1:%d: timed out connecting", port);
	snprintf(then, sizeof(then), "; %s: ", second_label);
	char *at = strstr(r->why, first);
	UNIT_CHECK(at != NULL, "reason \"%s\" lacks \"%s\"", r->why, first);
	UNIT_CHECK(at && strstr(at, then) != NULL, "reason \"%s\" does not go on with %s", r->why,
		   second_label);
	return c;
}

static void round_end(struct pgc *c, struct round *r, int fd)
{
	pgc_free(c);
	event_base_free(r->base);
	close(fd);
}

UNIT_TEST(connect_timeout_moves_to_the_next_host)
{
	struct round r;
	int fd, answered = 0;
	struct pgc *c = silent_first_round("127.0.0.1:1", "127.0.0.1:1", &r, &fd, &answered);
	if (!c)
		return;
	UNIT_CHECK(pgc_query_timeout(c) == 1000, "query timeout %d", pgc_query_timeout(c));
	UNIT_CHECK(answered == 1, "the queued query was answered %d, want 1 (NULL)", answered);
	UNIT_CHECK(!pgc_is_up(c), "up without a server");
	round_end(c, &r, fd);
}

/* A host without a port in a URI (its port list ",5433" or "5433,") is a
 * host of its own all the same, with libpq's default port. */
UNIT_TEST(a_host_without_a_port_is_a_host_of_its_own)
{
	struct round r;
	int fd, answered = 0;
	struct pgc *c = silent_first_round("127.0.0.2", "127.0.0.2:5432", &r, &fd, &answered);
	if (!c)
		return;
	round_end(c, &r, fd);
}

int main(void)
{
	UNIT_RUN(defaults_fill_in);
	UNIT_RUN(url_settings_win);
	UNIT_RUN(environment_wins_over_defaults);
	UNIT_RUN(bad_strings_are_refused_by_libpq);
	UNIT_RUN(connect_timeout_moves_to_the_next_host);
	UNIT_RUN(a_host_without_a_port_is_a_host_of_its_own);
	return UNIT_DONE();
}
