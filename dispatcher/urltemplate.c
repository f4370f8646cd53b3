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

#include <stdio.h>
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
	const char *auth = tmpl + slen + 3;
	size_t alen = strcspn(auth, "/?#");
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
	host_part(tmpl, slen + 3, &hostlen);
	if (hostlen == 0) {
		snprintf(err, errlen, "no host in '%.64s'", tmpl);
		return false;
	}
	return authority_plain(tmpl, err, errlen) && walk(tmpl, &none, NULL, err, errlen);
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
