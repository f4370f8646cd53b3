/*
 * urltemplate: webhook target URLs as RFC 6570 level 1 templates.
 *
 * A webhook URL may hold {namespace} {name} {repository} {tag} {digest}
 * {action}; each is replaced by its value with every byte outside the
 * RFC 3986 unreserved set (ALPHA DIGIT - . _ ~) percent-encoded, so that
 * `team-a/app` becomes `team-a%2Fapp` and a digest's ':' becomes `%3A`.
 * That makes `https://portainer:9443/api/webhooks/ID?tag={tag}` safe
 * whatever the tag. Text outside braces is copied as written.
 *
 * Also here: removing `user:password@` from a URL before it is written to
 * the delivery history. Pure string functions, no I/O.
 */
#ifndef REGHOOK_URLTEMPLATE_H
#define REGHOOK_URLTEMPLATE_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>

/* The values of the template variables, all borrowed; NULL expands to nothing. */
struct urltemplate_vars {
	const char *namespace_, *name, *repository, *tag, *digest, *action;
};

/*
 * Appends the expansion of tmpl to out. On a syntax error (unknown
 * variable, unclosed '{', '}' without '{', empty or level 2+ expression)
 * err receives one line naming the problem and its offset, out is left as
 * it was, and the result is false.
 */
bool urltemplate_expand(const char *tmpl, const struct urltemplate_vars *vars, struct buf *out,
			char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Validates a template when a webhook is added or changed: its syntax as
 * urltemplate_expand() checks it, that it is an absolute http:// or
 * https:// URL with a host and no whitespace or control characters, and
 * urltemplate_check_target().
 */
bool urltemplate_check(const char *tmpl, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Whether the host, port and the rest of url (a template, or an expanded
 * URL) are what an HTTP client can send: a host name of RFC 3986's
 * unreserved characters ({namespace} and {action} count as such), an
 * IPv4 address, or an IPv6 address in brackets; a port from 1 to 65535 if
 * one is given; and no byte beyond ASCII, nor one of " < > \ ^ ` | in
 * the path and query (percent-encoded, they may be). The userinfo is not
 * looked at. If not, err says why (quoting no credential).
 */
bool urltemplate_check_target(const char *url, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Appends url to out without its userinfo (`user:password@`), for history
 * rows. False, with out unchanged, if url has no `scheme://`.
 */
bool urltemplate_strip_credentials(const char *url, struct buf *out)
	__attribute__((warn_unused_result));

#endif
