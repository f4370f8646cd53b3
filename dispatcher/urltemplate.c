/*
 * urltemplate: see urltemplate.h.
 *
 * Expansion and checking share one walk over the template, so a template
 * that urltemplate_check() accepted when the webhook was added cannot fail
 * to expand at delivery time. Only level 1 is supported: an expression is a
 * bare variable name. Level 2+ operators ({+var}, {?var}, ...) are refused
 * with a message saying so rather than read as unknown names.
 */
#include "urltemplate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	size_t offset; /* of the value in struct urltemplate_vars */
} variables[] = {
	{"namespace", offsetof(struct urltemplate_vars, namespace_)},
	{"name", offsetof(struct urltemplate_vars, name)},
	{"repository", offsetof(struct urltemplate_vars, repository)},
	{"tag", offsetof(struct urltemplate_vars, tag)},
	{"digest", offsetof(struct urltemplate_vars, digest)},
	{"action", offsetof(struct urltemplate_vars, action)},
};

#define KNOWN_VARIABLES "namespace, name, repository, tag, digest, action"
/* RFC 6570 operators of levels 2 to 4, and the ones it reserves. */
#define OPERATORS "+#./;?&=,!@|"

/* ASCII only, whatever the locale: RFC 3986's ALPHA and DIGIT. */
static bool alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 3986 unreserved: the only bytes a level 1 expansion leaves as they are. */
static bool unreserved(unsigned char c)
{
	return alpha(c) || digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/*
 * A value of "." or ".." is encoded whole (%2E): left as it is, it was a
 * dot-segment that the URL's resolution removes (a tag ".." took
 * /deploy/{tag}/run to /run). No registry makes such a name; a token may.
 */
static void percent_encode(struct buf *out, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	bool dots = value && (strcmp(value, ".") == 0 || strcmp(value, "..") == 0);
	for (const unsigned char *p = (const unsigned char *)value; p && *p; p++) {
		if (unreserved(*p) && !dots) {
			buf_putc(out, (char)*p);
		} else {
			char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			buf_append(out, esc, 3);
		}
	}
}

/* Finds the value of the expression expr[0..len), which starts at offset at. */
static bool lookup(const char *expr, size_t len, size_t at, const struct urltemplate_vars *vars,
		   const char **value, char *err, size_t errlen)
{
	int shown = len > 64 ? 64 : (int)len;
	if (len == 0) {
		snprintf(err, errlen, "empty expression '{}' at offset %zu", at);
		return false;
	}
	if (strchr(OPERATORS, expr[0])) {
		snprintf(err, errlen,
			 "'{%.*s}' at offset %zu: operator '%c' is not supported, only {variable}",
			 shown, expr, at, expr[0]);
		return false;
	}
	for (size_t i = 0; i < sizeof(variables) / sizeof(variables[0]); i++) {
		if (strlen(variables[i].name) == len && memcmp(variables[i].name, expr, len) == 0) {
			*value = *(const char *const *)((const char *)vars + variables[i].offset);
			return true;
		}
	}
	snprintf(err, errlen,
		 "unknown variable '{%.*s}' at offset %zu (known: " KNOWN_VARIABLES ")", shown,
		 expr, at);
	return false;
}

/* Checks tmpl and, if out is not NULL, appends its expansion. */
static bool walk(const char *tmpl, const struct urltemplate_vars *vars, struct buf *out, char *err,
		 size_t errlen)
{
	const char *p = tmpl;
	for (;;) {
		size_t lit = strcspn(p, "{}");
		if (out)
			buf_append(out, p, lit);
		p += lit;
		if (*p == '\0')
			return true;
		if (*p == '}') {
			snprintf(err, errlen, "'}' without '{' at offset %zu", (size_t)(p - tmpl));
			return false;
		}
		const char *close = p + 1 + strcspn(p + 1, "{}");
		if (*close == '\0') {
			snprintf(err, errlen, "unclosed '{' at offset %zu", (size_t)(p - tmpl));
			return false;
		}
		if (*close == '{') {
			snprintf(err, errlen,
				 "'{' at offset %zu inside the expression opened at offset %zu",
				 (size_t)(close - tmpl), (size_t)(p - tmpl));
			return false;
		}
		const char *value = NULL;
		if (!lookup(p + 1, (size_t)(close - p - 1), (size_t)(p - tmpl), vars, &value, err,
			    errlen))
			return false;
		if (out)
			percent_encode(out, value);
		p = close + 1;
	}
}

static bool authority_plain(const char *tmpl, char *err, size_t errlen);

bool urltemplate_expand(const char *tmpl, const struct urltemplate_vars *vars, struct buf *out,
			char *err, size_t errlen)
{
	size_t start = out->len;
	if (authority_plain(tmpl, err, errlen) && walk(tmpl, vars, out, err, errlen))
		return true;
	/* Leave out as it was, not holding half an expansion. */
	out->len = start;
	if (out->data)
		out->data[start] = '\0';
	return false;
}

/* Length of a URI scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )) before "://". */
static size_t scheme_length(const char *url)
{
	size_t n = 0;
	if (!alpha((unsigned char)url[0]))
		return 0;
	while (alpha((unsigned char)url[n]) || digit((unsigned char)url[n]) || url[n] == '+' ||
	       url[n] == '-' || url[n] == '.')
		n++;
	return strncmp(url + n, "://", 3) == 0 ? n : 0;
}

/* The authority that starts at url + start, without its userinfo: host and port. */
static const char *host_part(const char *url, size_t start, size_t *len)
{
	const char *auth = url + start;
	size_t alen = strcspn(auth, "/?#");
	/* The last '@' ends the userinfo: a password may hold an unencoded '@'. */
	const char *host = auth;
	for (size_t i = 0; i < alen; i++)
		if (auth[i] == '@')
			host = auth + i + 1;
	*len = alen - (size_t)(host - auth);
	return host;
}

/*
 * In the authority, only {namespace} and {action}: a {tag} there let
 * whoever pushes a tag choose the host or port the delivery goes to (with
 * the webhook's password and headers); a namespace is registered by an
 * administrator, and an action is push or delete. Checked when a webhook
 * is added or set, and again at each expansion for rows written before.
 */
static bool authority_plain(const char *tmpl, char *err, size_t errlen)
{
	size_t slen = scheme_length(tmpl);
	if (slen == 0)
		return true;
	size_t alen = 0;
	const char *auth = host_part(tmpl, slen + 3, &alen); /* a password may hold braces */
	for (size_t i = 0; i < alen; i++) {
		if (auth[i] != '{' && auth[i] != '}')
			continue;
		if (auth[i] == '{' && (strncmp(auth + i, "{namespace}", 11) == 0 ||
				       strncmp(auth + i, "{action}", 8) == 0)) {
			i += auth[i + 1] == 'n' ? 10 : 7;
			continue;
		}
		int n = (int)strcspn(auth + i + 1, "}/?#");
		snprintf(err, errlen,
			 "'%.*s' in the host or port (offset %zu): whoever pushes would choose "
			 "where the request goes; only {namespace} and {action} may be there",
			 n + 2 > 66 ? 66 : n + 2, auth + i, (size_t)(auth - tmpl) + i);
		return false;
	}
	return true;
}

/* An IPv6 address (with a %25 zone) in a URL's brackets, inside[0..len). */
static bool ipv6_literal(const char *inside, size_t len)
{
	char addr[64];
	const char *zone = memmem(inside, len, "%25", 3);
	size_t alen = zone ? (size_t)(zone - inside) : len;
	if (alen == 0 || alen >= sizeof(addr))
		return false;
	memcpy(addr, inside, alen);
	addr[alen] = '\0';
	struct in6_addr a;
	if (inet_pton(AF_INET6, addr, &a) != 1)
		return false;
	if (zone) {
		if (zone + 3 == inside + len)
			return false;
		for (const char *z = zone + 3; z < inside + len; z++)
			if (!unreserved((unsigned char)*z))
				return false;
	}
	return true;
}

bool urltemplate_check_target(const char *url, char *err, size_t errlen)
{
	size_t slen = scheme_length(url), len = 0;
	if (slen == 0) {
		snprintf(err, errlen, "not an absolute URL");
		return false;
	}
	const char *host = host_part(url, slen + 3, &len);
	const char *end = host + len, *port = NULL;
	if (len == 0) {
		snprintf(err, errlen, "no host");
		return false;
	}
	if (*host == '[') {
		const char *close = memchr(host, ']', len);
		if (!close) {
			snprintf(err, errlen, "'[' without ']' in the host");
			return false;
		}
		if (!ipv6_literal(host + 1, (size_t)(close - host - 1))) {
			snprintf(err, errlen, "'%.*s' is not an IPv6 address",
				 (int)(close - host > 64 ? 64 : close - host - 1), host + 1);
			return false;
		}
		if (close + 1 < end && close[1] != ':') {
			snprintf(err, errlen,
				 "'%c' after the IPv6 address: only ':port' may follow", close[1]);
			return false;
		}
		port = close + 1 < end ? close + 2 : NULL;
	} else {
		const char *p = host;
		for (; p < end && *p != ':'; p++) {
			unsigned char c = (unsigned char)*p;
			if (c == '{' && (strncmp(p, "{namespace}", 11) == 0 ||
					 strncmp(p, "{action}", 8) == 0)) {
				p += p[1] == 'n' ? 10 : 7;
				continue;
			}
			if (c >= 0x80) {
				snprintf(err, errlen,
					 "the host holds a byte that is not ASCII (0x%02X): give "
					 "an internationalized name in its ASCII form (xn--...)",
					 c);
				return false;
			}
			if (!unreserved(c)) { /* a reg-name as host names are written */
				snprintf(err, errlen, "'%c' cannot be in a host name", c);
				return false;
			}
		}
		port = p < end ? p + 1 : NULL;
		if (port && memchr(port, ':', (size_t)(end - port))) {
			snprintf(err, errlen,
				 "more than one ':' in the host and port: an IPv6 "
				 "address goes in brackets, http://[::1]:8080/");
			return false;
		}
		if (p == host) {
			snprintf(err, errlen, "no host");
			return false;
		}
	}
	if (port && port < end) {
		long value = 0;
		for (const char *p = port; p < end; p++) {
			if (!digit((unsigned char)*p) || p - port >= 5) {
				snprintf(err, errlen, "the port is not a number from 1 to 65535");
				return false;
			}
			value = value * 10 + (*p - '0');
		}
		if (value < 1 || value > 65535) {
			snprintf(err, errlen, "the port is not a number from 1 to 65535");
			return false;
		}
	}
	for (const unsigned char *p = (const unsigned char *)end; *p; p++) {
		if (*p >= 0x80 || strchr("\"<>\\^`|", *p)) {
			snprintf(err, errlen,
				 *p >= 0x80 ? "a byte that is not ASCII (0x%02X) at offset %zu: "
					      "percent-encode it"
					    : "'%c' at offset %zu cannot be in a URL: "
					      "percent-encode it",
				 *p, (size_t)(p - (const unsigned char *)url));
			return false;
		}
	}
	return true;
}

bool urltemplate_check(const char *tmpl, char *err, size_t errlen)
{
	static const struct urltemplate_vars none;
	size_t slen = scheme_length(tmpl), hostlen = 0;

	for (const unsigned char *p = (const unsigned char *)tmpl; *p; p++) {
		if (*p <= ' ' || *p == 0x7f) {
			snprintf(err, errlen, "whitespace or control character at offset %zu",
				 (size_t)(p - (const unsigned char *)tmpl));
			return false;
		}
	}
	if (!(slen == 4 && strncasecmp(tmpl, "http", 4) == 0) &&
	    !(slen == 5 && strncasecmp(tmpl, "https", 5) == 0)) {
		snprintf(err, errlen, "not an http:// or https:// URL: '%.64s'", tmpl);
		return false;
	}
	const char *host = host_part(tmpl, slen + 3, &hostlen);
	if (hostlen == 0) {
		snprintf(err, errlen, "no host");
		return false;
	}
	/*
	 * A brace in the user name or password would be read as a template's
	 * (and quoted in the message): said so, without quoting it.
	 */
	const char *info = tmpl + slen + 3;
	if (memchr(info, '{', (size_t)(host - info)) || memchr(info, '}', (size_t)(host - info))) {
		snprintf(err, errlen,
			 "a '{' or '}' in the user name or password: percent-encode "
			 "it (%%7B, %%7D)");
		return false;
	}
	return authority_plain(tmpl, err, errlen) && walk(tmpl, &none, NULL, err, errlen) &&
	       urltemplate_check_target(tmpl, err, errlen);
}

bool urltemplate_strip_credentials(const char *url, struct buf *out)
{
	size_t slen = scheme_length(url), hostlen;
	if (slen == 0)
		return false;
	const char *host = host_part(url, slen + 3, &hostlen);
	buf_append(out, url, slen + 3);
	buf_puts(out, host);
	return true;
}
