/*
 * callback: see callback.h. The body is refused before the database is
 * asked; the token is only ever compared by the database, on the control
 * connection (record_callback() returns NULL for one it does not know).
 */
#include "callback.h"
#include "buf.h"
#include "daemon.h"
#include "httpd.h"
#include "jsonparse.h"
#include "reply.h"

#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

/* A callback body field: absent or null is NULL; anything but a string is an error. */
static bool callback_field(yajl_val tree, const char *name, const char **out)
{
	const char *path[] = {name, NULL};
	yajl_val v = yajl_tree_get(tree, path, yajl_t_any);
	*out = NULL;
	if (!v || YAJL_IS_NULL(v))
		return true;
	if (!YAJL_IS_STRING(v) || strlen(v->u.string) > 4096)
		return false;
	*out = v->u.string;
	return true;
}

struct callback {
	struct daemon *d;
	struct httpd_req *req;
};

static void callback_recorded(struct pgc *c, PGresult *res, void *arg)
{
	struct callback *cb = arg;
	struct httpd_req *req = cb->req;
	cb->d->callbacks--;
	free(cb);
	if (!pgc_ok(res)) {
		reply_unavailable(req, REPLY_RETRY_DOWN, "database unavailable; retry");
	} else if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		httpd_reply_error(req, 404, "unknown callback token");
	} else {
		httpd_reply_json(req, 200, "{\"status\":\"recorded\"}");
	}
}

void callback_handle(struct daemon *d, struct httpd_req *req, const char *token)
{
	static const struct jsonparse_limits limits = {8, 0};
	size_t len = httpd_body_length(req);
	char err[256];
	const char *state, *description, *context, *target_url;
	yajl_val tree = NULL;

	/* Refused before the body is copied whole (httpd_body). */
	if (len == 0 || len > 65536) {
		httpd_reply_error(req, 400, len ? "body too large" : "empty body");
		return;
	}
	const char *body = httpd_body(req, &len);
	if (jsonparse(body, len, &limits, &tree, err, sizeof(err)) != JSONPARSE_OK) {
		reply_errorf(req, 400, "body is %s", err);
	} else if (!YAJL_IS_OBJECT(tree)) {
		httpd_reply_error(req, 400, "body is not a JSON object");
	} else if (!callback_field(tree, "state", &state) || !state ||
		   (strcmp(state, "success") && strcmp(state, "failure") &&
		    strcmp(state, "error"))) {
		httpd_reply_error(req, 400, "state must be \"success\", \"failure\" or \"error\"");
	} else if (!callback_field(tree, "description", &description) ||
		   !callback_field(tree, "context", &context) ||
		   !callback_field(tree, "target_url", &target_url)) {
		httpd_reply_error(req, 400, "description, context and target_url must be strings");
	} else if (!pgc_is_up(d->control) || !d->schema_ok) {
		reply_unavailable(req, REPLY_RETRY_DOWN, "database unavailable; retry");
	} else {
		const char *params[] = {token, state, description, context, target_url};
		struct callback *cb = xmalloc(sizeof(*cb));
		cb->d = d;
		cb->req = req;
		d->callbacks++;
		pgc_query(d->control, "SELECT reghook.record_callback($1, $2, $3, $4, $5)", 5,
			  params, callback_recorded, cb);
	}
	if (tree)
		yajl_tree_free(tree);
}
