/*
 * reply: see reply.h.
 */
#include "reply.h"
#include "buf.h"
#include "httpd.h"

#include <stdarg.h>

void reply_unavailable(struct httpd_req *req, const char *retry_after, const char *why)
{
	httpd_add_header(req, "Retry-After", retry_after);
	httpd_reply_error(req, 503, why);
}

void reply_errorf(struct httpd_req *req, int status, const char *fmt, ...)
{
	struct buf msg = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&msg, fmt, ap);
	va_end(ap);
	httpd_reply_error(req, status, buf_cstr(&msg));
	buf_free(&msg);
}
