/*
 * httpc: see httpc.h.
 *
 * DESIGN. Each socket curl cares about gets one struct sock with a
 * persistent event, re-assigned whenever curl changes its interest. curl's
 * timer becomes one evtimer; a zero timeout is honoured from the loop, never
 * by calling curl from inside its own timer callback. After every call into
 * curl_multi_socket_action the finished transfers are drained with
 * curl_multi_info_read, each removed from the multi handle before its
 * owner's callback runs.
 */
#include "httpc.h"
#include "buf.h"
#include "log.h"

#include <stdlib.h>

struct xfer {
	httpc_done_fn done;
	void *arg;
};

struct sock {
	struct httpc *h;
	struct event *ev; /* owned */
	curl_socket_t fd;
};

struct httpc {
	struct event_base *base; /* borrowed */
	CURLM *multi;		 /* owned */
	struct event *timer;	 /* owned */
	int running;		 /* transfers added and not yet completed */
};

static void check_done(struct httpc *h)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode result = msg->data.result;
		struct xfer *x = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
		curl_multi_remove_handle(h->multi, easy);
		h->running--;
		if (x) {
			httpc_done_fn done = x->done;
			void *arg = x->arg;
			free(x);
			curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
			done(easy, result, arg);
		}
	}
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
	struct sock *s = arg;
	struct httpc *h = s->h;
	int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
		     ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int still;
	curl_multi_socket_action(h->multi, fd, action, &still);
	check_done(h);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct httpc *h = arg;
	int still;
	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &still);
	check_done(h);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms the timer; curl is called from the loop. */
static int set_timer(CURLM *multi, long timeout_ms, void *arg)
{
	struct httpc *h = arg;
	if (timeout_ms < 0) {
		evtimer_del(h->timer);
		return 0;
	}
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	evtimer_add(h->timer, &tv);
	return 0;
}

/* CURLMOPT_SOCKETFUNCTION: watch, re-watch or forget a socket. */
static int set_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct httpc *h = arg;
	struct sock *s = sockp;

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			event_free(s->ev);
			free(s);
			curl_multi_assign(h->multi, fd, NULL);
		}
		return 0;
	}
	short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
		     ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->h = h;
		s->fd = fd;
		s->ev = event_new(h->base, fd, kind, on_socket_event, s);
		curl_multi_assign(h->multi, fd, s);
	} else {
		event_del(s->ev);
		event_assign(s->ev, h->base, fd, kind, on_socket_event, s);
	}
	event_add(s->ev, NULL);
	return 0;
}

bool httpc_async_dns(void)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	return (v->features & CURL_VERSION_ASYNCHDNS) != 0;
}

struct httpc *httpc_new(struct event_base *base, long max_connections)
{
	static bool global_done;
	if (!global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		global_done = true;
	}
	struct httpc *h = xcalloc(1, sizeof(*h));
	h->base = base;
	h->multi = curl_multi_init();
	if (!h->multi) {
		free(h);
		return NULL;
	}
	h->timer = evtimer_new(base, on_timer, h);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, set_socket);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, set_timer);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	httpc_set_max_connections(h, max_connections);
	return h;
}

void httpc_set_max_connections(struct httpc *h, long max_connections)
{
	curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_connections);
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, max_connections);
}

void httpc_free(struct httpc *h)
{
	if (!h)
		return;
	curl_multi_cleanup(h->multi);
	event_free(h->timer);
	free(h);
}

bool httpc_add(struct httpc *h, CURL *easy, httpc_done_fn done, void *arg)
{
	struct xfer *x = xcalloc(1, sizeof(*x));
	x->done = done;
	x->arg = arg;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
	if (curl_multi_add_handle(h->multi, easy) != CURLM_OK) {
		curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		free(x);
		return false;
	}
	h->running++;
	return true;
}

void httpc_remove(struct httpc *h, CURL *easy)
{
	struct xfer *x = NULL;
	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
	if (!x)
		return;
	curl_multi_remove_handle(h->multi, easy);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
	free(x);
	h->running--;
}

int httpc_running(const struct httpc *h)
{
	return h->running;
}
