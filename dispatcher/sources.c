/*
 * sources: see sources.h.
 */
#include "sources.h"
#include "buf.h"
#include "log.h"

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct source {
	long long id;
	char *name; /* owned */
	unsigned char hash[SHA256_DIGEST_LENGTH];
};

struct sources {
	struct source *rows; /* owned */
	int count;
	bool loaded;
	bool reloading;
	bool again;	      /* a reload was asked for while one was running */
	struct event *retry;  /* owned: a failed load tried again (on_retry) */
	struct pgc *retry_on; /* borrowed: the connection it failed on */
	int retry_ms;	      /* the next wait: from 1 s, doubling up to 30 s */
};

#define SOURCES_RETRY_FIRST_MS 1000
#define SOURCES_RETRY_MAX_MS 30000

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct sources *s = arg;
	/* A connection that went down loads them again when it is back. */
	if (!s->loaded && pgc_is_up(s->retry_on))
		sources_reload(s, s->retry_on);
}

struct sources *sources_new(struct event_base *base)
{
	struct sources *s = xcalloc(1, sizeof(struct sources));
	s->retry = evtimer_new(base, on_retry, s);
	s->retry_ms = SOURCES_RETRY_FIRST_MS;
	return s;
}

static void clear(struct sources *s)
{
	for (int i = 0; i < s->count; i++)
		free(s->rows[i].name);
	free(s->rows);
	s->rows = NULL;
	s->count = 0;
}

void sources_free(struct sources *s)
{
	if (!s)
		return;
	clear(s);
	event_free(s->retry);
	free(s);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static void on_loaded(struct pgc *c, PGresult *res, void *arg)
{
	struct sources *s = arg;
	s->reloading = false;
	if (!pgc_ok(res)) {
		/*
		 * The old rows may hold a token revoked since: none is taken
		 * until a reload lands. Tried again after a pause (a lock a
		 * person held, a query cancelled, a privilege revoked for a
		 * while): waiting for the next change of the table, or for the
		 * connection to come back, refused every event until then.
		 */
		log_warn("loading registry sources: %s; events are refused until they load, "
			 "tried again in %d s",
			 pgc_error(res), s->retry_ms / 1000);
		s->loaded = false;
		s->retry_on = c;
		struct timeval tv = {s->retry_ms / 1000, (s->retry_ms % 1000) * 1000};
		evtimer_add(s->retry, &tv);
		s->retry_ms = s->retry_ms * 2 > SOURCES_RETRY_MAX_MS ? SOURCES_RETRY_MAX_MS
								     : s->retry_ms * 2;
	} else {
		s->retry_ms = SOURCES_RETRY_FIRST_MS;
		evtimer_del(s->retry);
		clear(s);
		s->count = PQntuples(res);
		s->rows = xcalloc((size_t)(s->count ? s->count : 1), sizeof(struct source));
		for (int i = 0; i < s->count; i++) {
			struct source *src = &s->rows[i];
			const char *hex = PQgetvalue(res, i, 2);
			src->id = atoll(PQgetvalue(res, i, 0));
			src->name = xstrdup(PQgetvalue(res, i, 1));
			for (int j = 0; j < SHA256_DIGEST_LENGTH && hex[2 * j]; j++)
				src->hash[j] = (unsigned char)(hexval(hex[2 * j]) << 4 |
							       hexval(hex[2 * j + 1]));
		}
		s->loaded = true;
		log_debug("registry sources loaded: %d", s->count);
	}
	if (s->again && pgc_is_up(c)) {
		s->again = false;
		sources_reload(s, c);
	}
}

void sources_reload(struct sources *s, struct pgc *c)
{
	if (s->reloading) {
		s->again = true;
		return;
	}
	s->reloading = true;
	pgc_query(c, "SELECT id, name, encode(token_sha256, 'hex') FROM reghook.registry_sources",
		  0, NULL, on_loaded, s);
}

void sources_stale(struct sources *s)
{
	s->loaded = false;
	/*
	 * The connection is down: its return loads them once the schema is
	 * current. A retry left armed could land in the migration run on
	 * that return, inside its transaction, and fail it.
	 */
	evtimer_del(s->retry);
}

bool sources_ready(const struct sources *s)
{
	return s->loaded;
}

bool sources_authenticate(const struct sources *s, const char *authorization, long long *id,
			  const char **name)
{
	unsigned char hash[SHA256_DIGEST_LENGTH];
	const struct source *found = NULL;

	if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
		return false;
	const char *token = authorization + 7;
	while (*token == ' ')
		token++;
	size_t len = strlen(token);
	while (len > 0 && token[len - 1] == ' ')
		len--;
	if (len == 0)
		return false;
	SHA256((const unsigned char *)token, len, hash);
	/* Every row is compared, whichever matches, so timing tells nothing. */
	for (int i = 0; i < s->count; i++)
		if (CRYPTO_memcmp(hash, s->rows[i].hash, sizeof(hash)) == 0)
			found = &s->rows[i];
	if (!found)
		return false;
	*id = found->id;
	*name = found->name;
	return true;
}
