/*
 * cmd_webhook: `reghook webhook add|list|show|set|enable|disable|remove|test`,
 * wrapping reghook.webhook_add(), webhook_set() and friends. Options are
 * checked here first (method, actions, format, durations, URL template,
 * secret, header syntax), so a typo gets a one-line reason and exit 2
 * before anything reaches the database.
 */
#include "buf.h"
#include "cli.h"
#include "conf.h"
#include "formats.h"
#include "jsonparse.h"
#include "request.h"
#include "sign.h"
#include "template.h"
#include "urltemplate.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* webhook test polls for its attempt this often, for the webhook's timeout and this much more. */
#define TEST_POLL_MS 100
#define TEST_WAIT_EXTRA_MS 10000LL

/* The longest --timeout; webhook_set() in SQL allows no more. */
#define WEBHOOK_MAX_TIMEOUT_MS 86400000LL

/* Options that set webhook fields: flag, field in webhook_set(), kind. */
enum opt_kind {
	OPT_TEXT,
	OPT_METHOD,
	OPT_ACTIONS,
	OPT_FORMAT,
	OPT_TEMPLATE,
	OPT_DURATION,
	OPT_INT,
	OPT_SECRET
};

static const struct webhook_opt {
	const char *flag;
	const char *field;
	enum opt_kind kind;
	const char *help;
} webhook_opts[] = {
	{"--name", "name", OPT_TEXT, "label shown in lists and history (default: the URL's host)"},
	{"--url", "url", OPT_TEXT, "new target URL (set only)"},
	{"--method", "method", OPT_METHOD, "GET, POST, PUT, PATCH or DELETE (default POST)"},
	{"--content-type", "content_type", OPT_TEXT,
	 "Content-Type of the body (default application/json)"},
	{"--username", "username", OPT_TEXT, "HTTP basic auth user"},
	{"--password", "password", OPT_TEXT, "HTTP basic auth password (write-only)"},
	{"--secret", "secret", OPT_SECRET,
	 "Standard Webhooks signing key, whsec_<base64> (write-only)"},
	{"--actions", "actions", OPT_ACTIONS,
	 "push,delete: which events are delivered (default push)"},
	{"--repository", "repository", OPT_TEXT, "glob on the repository name (default *)"},
	{"--tag", "tag", OPT_TEXT, "glob on the tag (default *)"},
	{"--format", "format", OPT_FORMAT,
	 "the payload format, one of those below (default dockerhub)"},
	{"--template", "template", OPT_TEMPLATE,
	 "FILE or JSON text: the template of --format template (at most 16 KiB)"},
	{"--timeout", "timeout_ms", OPT_DURATION,
	 "request timeout, e.g. 30s; default: request_timeout's (and 'default' sets that back)"},
	{"--max-attempts", "max_attempts", OPT_INT,
	 "attempts before failing; default: max_attempts' (and 'default' sets that back)"},
};

#define NOPTS (sizeof(webhook_opts) / sizeof(webhook_opts[0]))

static void webhook_options(void)
{
	for (size_t i = 0; i < NOPTS; i++)
		printf("  %-16s %s\n", webhook_opts[i].flag, webhook_opts[i].help);
	printf("  %-16s %s\n", "--header",
	       "'Name: value', repeatable; replaces all headers on set");
	printf("  %-16s %s\n", "--password-file",
	       "FILE (- for standard input): --password from it, out of the command line");
	printf("  %-16s %s\n", "--secret-file", "FILE (- for standard input): --secret from it");
	printf("  %-16s %s\n", "--header-file",
	       "FILE (- for standard input): a --header on each line");
	printf("Formats:\n");
	for (int f = 0; f < FORMATS_COUNT; f++)
		printf("  %-24s %s\n", formats_name((enum formats_format)f),
		       formats_help((enum formats_format)f));
}

/*
 * Appends the file path names ("-": standard input) to text, at most max
 * bytes and one more (so that the caller sees it is over); false after
 * saying why in err, flag first.
 */
static bool read_file_text(const char *flag, const char *path, size_t max, struct buf *text,
			   char *err, size_t errlen)
{
	bool in = strcmp(path, "-") == 0;
	FILE *f = in ? stdin : fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: %s: %s", flag, path, strerror(errno));
		return false;
	}
	char chunk[4096];
	size_t n;
	while (text->len <= max && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(text, chunk, n);
	bool failed = ferror(f);
	int saved = errno; /* a directory: "Is a directory" */
	if (!in)
		fclose(f);
	if (failed) {
		snprintf(err, errlen, "%s: %s: %s", flag, path, strerror(saved));
		return false;
	}
	return true;
}

/*
 * The text of --template: v itself when it starts as JSON does ('{' or
 * '[' after blanks), else the file v names. The template is checked here,
 * as reghook will render it.
 */
static bool read_template(const char *v, struct buf *text, char *err, size_t errlen)
{
	const char *p = v + strspn(v, " \t\r\n");
	if (*p == '{' || *p == '[')
		buf_puts(text, v);
	else if (!read_file_text("--template", v, TEMPLATE_MAX_BYTES, text, err, errlen))
		return false;
	if (text->len > TEMPLATE_MAX_BYTES) {
		snprintf(err, errlen, "--template: over the limit of %d bytes", TEMPLATE_MAX_BYTES);
		return false;
	}
	const char *t = text->data ? text->data : "";
	char why[200];
	if (memchr(t, '\0', text->len)) {
		snprintf(err, errlen, "--template: holds a NUL byte");
		return false;
	}
	if (!template_check(t, text->len, why, sizeof(why))) {
		snprintf(err, errlen, "--template: %s", why);
		return false;
	}
	return true;
}

/*
 * Whether a value is UTF-8 text, as the database keeps it: a byte that is
 * not would go into the JSON as U+FFFD, and the endpoint get another
 * password or header than the one given.
 */
static bool utf8_text(const char *flag, const char *v, size_t len, char *err, size_t errlen)
{
	size_t bad;
	if (jsonparse_utf8_ok((const unsigned char *)v, len, &bad))
		return true;
	snprintf(err, errlen, "%s: not UTF-8 text (byte %zu, 0x%02x)", flag, bad + 1,
		 (unsigned char)v[bad]);
	return false;
}

static bool check_value(const struct webhook_opt *o, const char *v, struct buf *json, char *err,
			size_t errlen)
{
	static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
	long long n;
	buf_printf(json, "%s\"%s\":", json->len > 1 ? "," : "", o->field);
	/* --timeout default, --max-attempts default: the configuration's value again. */
	if ((o->kind == OPT_DURATION || o->kind == OPT_INT) && strcmp(v, "default") == 0) {
		buf_puts(json, "null");
		return true;
	}
	switch (o->kind) {
	case OPT_METHOD:
		for (size_t i = 0; i < 5; i++) {
			if (strcasecmp(v, methods[i]) == 0) {
				buf_json_str(json, methods[i], strlen(methods[i]));
				return true;
			}
		}
		snprintf(err, errlen, "--method: '%s' is not GET, POST, PUT, PATCH or DELETE", v);
		return false;
	case OPT_ACTIONS: {
		buf_putc(json, '[');
		const char *p = v;
		int count = 0;
		bool seen[2] = {false, false}; /* push, delete: each once in the list stored */
		while (*p) {
			size_t len = strcspn(p, ",");
			bool push = len == 4 && strncmp(p, "push", 4) == 0;
			if (!push && !(len == 6 && strncmp(p, "delete", 6) == 0)) {
				snprintf(err, errlen, "--actions: '%.*s' is not push or delete",
					 (int)len, p);
				return false;
			}
			if (!seen[!push]) {
				seen[!push] = true;
				buf_printf(json, "%s\"%.*s\"", count++ ? "," : "", (int)len, p);
			}
			p += len + (p[len] == ',');
		}
		buf_putc(json, ']');
		if (!count) {
			snprintf(err, errlen, "--actions: give push, delete or push,delete");
			return false;
		}
		return true;
	}
	case OPT_FORMAT: {
		enum formats_format f;
		if (!formats_parse(v, &f)) {
			struct buf names = BUF_INIT;
			for (int i = 0; i < FORMATS_COUNT; i++)
				buf_printf(&names, "%s%s", i ? ", " : "",
					   formats_name((enum formats_format)i));
			snprintf(err, errlen, "--format: '%s' is not one of %s", v, names.data);
			buf_free(&names);
			return false;
		}
		break;
	}
	case OPT_TEMPLATE: {
		struct buf text = BUF_INIT;
		bool ok = read_template(v, &text, err, errlen);
		if (ok)
			buf_json_str(json, text.data ? text.data : "", text.len);
		buf_free(&text);
		return ok;
	}
	case OPT_DURATION:
		/* A bare number would be seconds in the configuration; here it is refused,
		 * so that "--timeout 30" cannot mean 30 ms to one reader and 30 s to another. */
		if (*v && v[strspn(v, "0123456789")] == '\0') {
			snprintf(err, errlen, "--timeout: '%s' needs a unit: %ss or %sms", v, v, v);
			return false;
		}
		if (!conf_parse_duration(v, &n)) {
			snprintf(err, errlen,
				 "--timeout: '%s' is not a duration such as 500ms, 10s, 2m", v);
			return false;
		}
		if (n < 1 || n > WEBHOOK_MAX_TIMEOUT_MS) {
			snprintf(err, errlen, "--timeout: '%s' is %s; the most is 24h", v,
				 n < 1 ? "zero" : "too long");
			return false;
		}
		buf_printf(json, "%lld", n);
		return true;
	case OPT_INT: {
		char *end;
		n = strtoll(v, &end, 10);
		/* Digits only, as ids and --limit: strtoll takes blanks and a sign first. */
		if (!isdigit((unsigned char)*v) || *end || n < 1 || n > 100) {
			snprintf(err, errlen, "--max-attempts: '%s' is not a number from 1 to 100",
				 v);
			return false;
		}
		buf_printf(json, "%lld", n);
		return true;
	}
	case OPT_SECRET:
		if (*v && !sign_secret_valid(v)) {
			snprintf(err, errlen,
				 "--secret: not a signing key of the form whsec_<base64>");
			return false;
		}
		break;
	case OPT_TEXT:
		if (strcmp(o->flag, "--url") == 0 && !urltemplate_check(v, err, errlen))
			return false;
		/* An empty name is a blank in every list and the history; the URL's host is the
		 * default. */
		if (strcmp(o->flag, "--name") == 0 && !v[strspn(v, " \t")]) {
			snprintf(err, errlen, "--name: empty; leave it out for the URL's host");
			return false;
		}
		break;
	}
	if (!utf8_text(o->flag, v, strlen(v), err, errlen))
		return false;
	buf_json_str(json, v, strlen(v));
	return true;
}

/* What a FILE option reads at most: more than any value (or 64 headers) may hold. */
#define VALUE_FILE_MAX (64 * 1024)
#define HEADER_FILE_MAX (1024 * 1024)

/*
 * The value of --password-file or --secret-file FILE ("-": standard input),
 * so that a secret need not stand in the command line, which every local
 * user may read (ps): the file's text, one line end at its end dropped.
 */
static bool read_value_file(const char *flag, const char *path, size_t max, struct buf *value,
			    char *err, size_t errlen)
{
	if (!read_file_text(flag, path, max, value, err, errlen))
		return false;
	if (value->len > max || (value->len && memchr(value->data, '\0', value->len))) {
		snprintf(err, errlen, "%s: %s: over %zu bytes, or a NUL byte in it", flag, path,
			 max);
		return false;
	}
	if (value->len && value->data[value->len - 1] == '\n')
		value->data[--value->len] = '\0';
	if (value->len && value->data[value->len - 1] == '\r')
		value->data[--value->len] = '\0';
	/* An empty value would clear what it sets: a pipe that failed, say. */
	if (value->len == 0) {
		snprintf(err, errlen, "%s: %s is empty (an empty value clears: give it as such)",
			 flag, path);
		return false;
	}
	buf_putc(value, '\0'); /* a C string */
	value->len--;
	return true;
}

/* One --header value (or a line of --header-file) into the headers' JSON array. */
static bool add_header(const char *v, struct buf *json, int *headers, char *err, size_t errlen)
{
	const char *colon = strchr(v, ':');
	if (!colon || colon == v || strpbrk(v, "\r\n")) {
		snprintf(err, errlen, "--header: expected 'Name: value'");
		return false;
	}
	if (!utf8_text("--header", v, strlen(v), err, errlen))
		return false;
	/* The name as the database reads it: without the blanks around it. */
	const char *start = v + strspn(v, " \t"), *end = colon;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	char name[256];
	snprintf(name, sizeof(name), "%.*s", (int)(end - start), start);
	/* RFC 9110's token, as the table's check has it. */
	static const char tchar[] = "!#$%&'*+.^_`|~-0123456789"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	if (!*name || name[strspn(name, tchar)]) {
		snprintf(err, errlen,
			 "--header: '%.64s' is not a field name (letters, digits and "
			 "!#$%%&'*+-.^_`|~)",
			 name);
		return false;
	}
	if (request_reserved_header(name)) {
		snprintf(err, errlen,
			 "--header: '%.64s' frames the request or is set by reghook: "
			 "not a webhook's own header",
			 name);
		return false;
	}
	buf_puts(json, (*headers)++ ? "," : (json->len > 1 ? ",\"headers\":[" : "\"headers\":["));
	buf_json_str(json, v, strlen(v));
	return true;
}

/* Takes every field option out of argv into a JSON object for webhook_set(). */
static bool take_fields(int *argc, char **argv, struct buf *json, bool *new_url, char *err,
			size_t errlen)
{
	const char *v, *path;
	int r;
	bool stdin_taken = false;
	buf_putc(json, '{');
	for (size_t i = 0; i < NOPTS; i++) {
		r = cli_take_option(argc, argv, webhook_opts[i].flag, &v);
		if (r < 0) {
			snprintf(err, errlen, "%s needs a value", webhook_opts[i].flag);
			return false;
		}
		/* --password-file and --secret-file stand for --password and --secret. */
		char file_flag[32] = "";
		if (webhook_opts[i].kind == OPT_SECRET ||
		    strcmp(webhook_opts[i].flag, "--password") == 0)
			snprintf(file_flag, sizeof(file_flag), "%s-file", webhook_opts[i].flag);
		int rf = *file_flag ? cli_take_option(argc, argv, file_flag, &path) : 0;
		/* Given twice: the second would be left to the configuration (--max-attempts,
		 * a key of it too) or said to be unknown. */
		const char *again, *twice = NULL;
		if (r > 0 && cli_take_option(argc, argv, webhook_opts[i].flag, &again) != 0)
			twice = webhook_opts[i].flag;
		else if (rf > 0 && cli_take_option(argc, argv, file_flag, &again) != 0)
			twice = file_flag;
		if (twice) {
			snprintf(err, errlen, "%s given twice", twice);
			return false;
		}
		if (rf < 0 || (rf > 0 && r > 0) || (rf > 0 && stdin_taken && !strcmp(path, "-"))) {
			snprintf(err, errlen,
				 rf < 0	 ? "%s needs a value (a file, or - for standard input)"
				 : r > 0 ? "%s and %.*s: give one of the two"
					 : "%s -: standard input is read for one option only",
				 file_flag, (int)(strlen(file_flag) - 5), file_flag);
			return false;
		}
		struct buf from_file = {0};
		if (rf > 0) {
			stdin_taken |= !strcmp(path, "-");
			if (!read_value_file(file_flag, path, VALUE_FILE_MAX, &from_file, err,
					     errlen)) {
				buf_free(&from_file);
				return false;
			}
			v = from_file.data;
			r = 1;
		}
		/* --template - reads standard input too. */
		if (r > 0 && webhook_opts[i].kind == OPT_TEMPLATE && strcmp(v, "-") == 0) {
			if (stdin_taken) {
				snprintf(
					err, errlen,
					"--template -: standard input is read for one option only");
				return false;
			}
			stdin_taken = true;
		}
		bool ok = r <= 0 || check_value(&webhook_opts[i], v, json, err, errlen);
		buf_free(&from_file);
		if (!ok)
			return false;
		if (r > 0 && strcmp(webhook_opts[i].field, "url") == 0)
			*new_url = true;
	}
	/* --header is repeatable, and --header-file FILE gives one a line; all
	 * of them replace the webhook's headers, and one empty --header ''
	 * clears them. */
	int headers = 0;
	bool clear = false;
	while ((r = cli_take_option(argc, argv, "--header-file", &path)) != 0) {
		struct buf lines = {0};
		if (r < 0 || (stdin_taken && !strcmp(path, "-"))) {
			snprintf(err, errlen,
				 r < 0 ? "--header-file needs a value (a file, or - for standard "
					 "input)"
				       : "--header-file -: standard input is read for one option "
					 "only");
			return false;
		}
		stdin_taken |= !strcmp(path, "-");
		bool ok = read_value_file("--header-file", path, HEADER_FILE_MAX, &lines, err,
					  errlen);
		for (char *line = lines.data, *next; ok && line && *line; line = next) {
			next = line + strcspn(line, "\n");
			if (*next)
				*next++ = '\0';
			size_t n = strlen(line);
			if (n && line[n - 1] == '\r')
				line[n - 1] = '\0';
			if (*line)
				ok = add_header(line, json, &headers, err, errlen);
		}
		buf_free(&lines);
		if (!ok)
			return false;
	}
	while ((r = cli_take_option(argc, argv, "--header", &v)) != 0) {
		if (r > 0 && *v == '\0') {
			clear = true;
			continue;
		}
		if (r < 0) {
			snprintf(err, errlen, "--header: expected 'Name: value'");
			return false;
		}
		if (!add_header(v, json, &headers, err, errlen))
			return false;
	}
	if (clear && headers) {
		snprintf(err, errlen, "--header '' clears the headers: give it alone");
		return false;
	}
	if (clear)
		buf_puts(json, json->len > 1 ? ",\"headers\":[" : "\"headers\":[");
	if (headers || clear)
		buf_putc(json, ']');
	buf_putc(json, '}');
	return true;
}

static const char list_sql[] =
	"SELECT w.id, n.name AS namespace, w.name, w.method, w.url,"
	" array_to_string(w.actions, ',') AS actions,"
	" CASE WHEN w.enabled THEN 'enabled' ELSE 'disabled' END AS state,"
	" coalesce(w.disabled_reason, '') AS reason"
	" FROM reghook.webhooks w JOIN reghook.namespaces n ON n.id = w.namespace_id"
	" WHERE $1::text IS NULL OR n.name = $1 ORDER BY w.id";

/*
 * Members may see a webhook but not its secrets: whether a password and a
 * secret are set comes from webhook_secret_state(), and header values only
 * for a role that may read them (the others see the names).
 */
#define SHOW_SQL(header)                                                                           \
	"SELECT w.id, n.name AS namespace, w.name, w.url, w.method, w.content_type,"               \
	" coalesce(w.username, '') AS username,"                                                   \
	" CASE WHEN s.has_password THEN 'set' ELSE 'none' END AS password,"                        \
	" CASE WHEN s.has_secret THEN 'set' ELSE 'none' END AS secret,"                            \
	" array_to_string(w.actions, ',') AS actions, w.repository_glob AS repository,"            \
	" w.tag_glob AS tag, w.format, coalesce(w.template, '') AS template, w.enabled, "          \
	"coalesce(w.disabled_reason, '') AS "                                                      \
	"disabled_reason,"                                                                         \
	" coalesce(w.timeout_ms::text, 'default') AS timeout_ms,"                                  \
	" coalesce(w.max_attempts::text, 'default') AS max_attempts,"                              \
	" coalesce((SELECT string_agg(" header ", E'\\n' ORDER BY h.position)"                     \
	"  FROM reghook.webhook_headers h WHERE h.webhook_id = w.id), '') AS headers,"             \
	" w.last_success_at, w.last_failure_at, w.failures_in_a_row"                               \
	" FROM reghook.webhooks w JOIN reghook.namespaces n ON n.id = w.namespace_id"              \
	" CROSS JOIN LATERAL reghook.webhook_secret_state(w.id) s WHERE w.id = $1"

static const char show_sql[] = SHOW_SQL("h.name || ': ' || h.value");
static const char show_sql_redacted[] = SHOW_SQL("h.name || ': (hidden)'");

static int webhook_show(PGconn *conn, const char *id)
{
	const char *params[] = {id};
	PGresult *res = cli_exec(
		conn, "SELECT has_column_privilege('reghook.webhook_headers', 'value', 'SELECT')",
		0, NULL);
	if (!res)
		return CLI_FAILED;
	bool values = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	res = cli_exec(conn, values ? show_sql : show_sql_redacted, 1, params);
	if (!res)
		return CLI_FAILED;
	if (PQntuples(res) == 0) {
		fprintf(stderr, "reghook: webhook %s does not exist\n", id);
		PQclear(res);
		return CLI_FAILED;
	}
	/* A value of several lines (headers, a template) goes on as many,
	 * under the first. */
	for (int c = 0; c < PQnfields(res); c++) {
		const char *name = PQfname(res, c);
		char *lines = xstrdup(PQgetvalue(res, 0, c)), *rest = lines;
		do {
			char *line = strsep(&rest, "\n");
			if (!rest && !*line && !*name)
				break; /* the end of a last line */
			char *value = cli_printable(line);
			printf("%-18s %s\n", name, value);
			free(value);
			name = "";
		} while (rest);
		free(lines);
	}
	PQclear(res);
	return CLI_OK;
}

/* " (reason)", printable (a person may set it through SQL), or nothing. */
static void print_reason(const char *reason)
{
	if (!*reason)
		return;
	char *shown = cli_printable(reason);
	printf(" (%s)", shown);
	free(shown);
}

/*
 * After a new URL: deliveries that failed, or wait (maybe hours) for their
 * next attempt, went to the old one. Says how to send them now.
 */
static void offer_retry(PGconn *conn, const char *id)
{
	const char *params[] = {id};
	PGresult *res = cli_exec(
		conn,
		"SELECT w.enabled, coalesce(w.disabled_reason, ''),"
		" (SELECT count(*) FROM reghook.deliveries d WHERE d.webhook_id = w.id"
		"  AND d.status = 'pending' AND (d.next_attempt_at > now() OR NOT w.enabled)),"
		" (SELECT count(*) FROM reghook.deliveries d WHERE d.webhook_id = w.id"
		"  AND d.status = 'failed')"
		" FROM reghook.webhooks w WHERE w.id = $1",
		1, params);
	if (!res)
		return;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return;
	}
	bool enabled = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	const char *waiting = PQgetvalue(res, 0, 2), *failed = PQgetvalue(res, 0, 3);
	bool one_waits = strcmp(waiting, "1") == 0, one_failed = strcmp(failed, "1") == 0;
	if (!enabled) {
		/* Retriggers refuse a disabled webhook: it is enabled first. */
		printf("Webhook %s is disabled", id);
		print_reason(PQgetvalue(res, 0, 1));
		if (strcmp(waiting, "0") == 0 && strcmp(failed, "0") == 0) {
			printf(": 'reghook webhook enable %s' starts its deliveries.\n", id);
		} else {
			printf(": once 'reghook webhook enable %s' has enabled it, ", id);
			if (strcmp(waiting, "0") != 0)
				printf("'reghook retrigger --webhook %s --waiting' tries its %s "
				       "waiting %s now%s",
				       id, waiting, one_waits ? "delivery" : "deliveries",
				       strcmp(failed, "0") != 0 ? " and " : "");
			if (strcmp(failed, "0") != 0)
				printf("'reghook retrigger --webhook %s --failed' queues its %s "
				       "failed %s again",
				       id, failed, one_failed ? "delivery" : "deliveries");
			printf(".\n");
		}
		PQclear(res);
		return;
	}
	if (strcmp(waiting, "0") != 0)
		printf("%s %s for a next attempt: 'reghook retrigger --webhook %s --waiting' "
		       "tries %s now.\n",
		       waiting, one_waits ? "delivery waits" : "deliveries wait", id,
		       one_waits ? "it" : "them");
	if (strcmp(failed, "0") != 0)
		printf("%s %s: 'reghook retrigger --webhook %s --failed' queues %s again.\n",
		       failed, one_failed ? "delivery failed" : "deliveries failed", id,
		       one_failed ? "it" : "them");
	PQclear(res);
}

/*
 * The test push's last attempt, if any, as a SQL user reads it, and why
 * its webhook is disabled if it is; no row once the delivery is gone (its
 * webhook removed).
 */
static const char test_outcome_sql[] =
	"SELECT h.attempt, h.status, coalesce(h.response_status::text, ''),"
	" coalesce(h.error_class, ''), coalesce(h.error, ''), coalesce(h.duration_ms::text, ''),"
	" (SELECT CASE WHEN NOT w.enabled THEN coalesce(w.disabled_reason, '') END"
	"  FROM reghook.webhooks w WHERE w.id = h.webhook_id)"
	" FROM reghook.delivery_history h WHERE h.delivery_id = $1::uuid"
	" ORDER BY h.attempt DESC NULLS LAST LIMIT 1";

/*
 * Queues a test push and waits for its first attempt, up to the webhook's
 * timeout and some seconds more (the claim, the connection), then prints
 * what happened. CLI_OK only for a delivered test push.
 */
static int webhook_test(PGconn *conn, const struct config *cfg, const char *id)
{
	char timeout[32];
	snprintf(timeout, sizeof(timeout), "%lld", cfg->request_timeout_ms);
	const char *params[] = {id, timeout};
	PGresult *res = cli_exec(conn,
				 "SELECT reghook.test_webhook($1), (SELECT coalesce(timeout_ms, "
				 "$2::integer) FROM reghook.webhooks WHERE id = $1)",
				 2, params);
	if (!res)
		return CLI_FAILED;
	char delivery[64];
	snprintf(delivery, sizeof(delivery), "%s", PQgetvalue(res, 0, 0));
	long long wait_ms = atoll(PQgetvalue(res, 0, 1)) + TEST_WAIT_EXTRA_MS;
	PQclear(res);
	printf("Test push queued for webhook %s: delivery %s. Waiting for its attempt (up to "
	       "%llds)...\n",
	       id, delivery, (wait_ms + 999) / 1000);
	fflush(stdout);

	const char *q[] = {delivery};
	for (long long waited = 0;; waited += TEST_POLL_MS) {
		res = cli_exec(conn, test_outcome_sql, 1, q);
		if (!res)
			return CLI_FAILED;
		if (PQntuples(res) == 0) {
			PQclear(res);
			fprintf(stderr,
				"reghook: the test push is gone: webhook %s was removed "
				"meanwhile\n",
				id);
			return CLI_FAILED;
		}
		if (!PQgetisnull(res, 0, 0))
			break;
		PQclear(res);
		if (waited >= wait_ms) {
			fprintf(stderr,
				"reghook: no attempt yet after %llds: is 'reghook serve' running "
				"on "
				"this database? The test push stays queued; "
				"'reghook deliveries --webhook %s' shows it.\n",
				(waited + 999) / 1000, id);
			return CLI_FAILED;
		}
		struct timespec ts = {0, TEST_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	const char *http = PQgetvalue(res, 0, 2), *class = PQgetvalue(res, 0, 3);
	const char *error = PQgetvalue(res, 0, 4), *ms = PQgetvalue(res, 0, 5);
	const char *status = PQgetvalue(res, 0, 1);
	bool disabled = !PQgetisnull(res, 0, 6);
	/* The error is text from elsewhere: made printable. */
	char *shown = cli_printable(error);
	int rc = CLI_OK;
	if (*class == '\0') {
		printf("Delivered: HTTP %s in %s ms.\n", http, ms);
	} else {
		rc = CLI_FAILED;
		/* An HTTP failure's error says no more than its status; a
		 * transport failure's says how long it took. */
		if (strcmp(class, "http") == 0)
			printf("Failed: HTTP %s after %s ms.\n", http, ms);
		else
			printf("Failed: %s: %s.\n", class, shown);
		if (strcmp(class, "blocked") == 0 && strstr(error, REQUEST_PRIVATE_OFF))
			printf("The target is on this machine or a private network: its "
			       "network in allow_private_networks (or allow_private_targets = "
			       "true, every private network) in reghook serve's configuration "
			       "allows it.\n");
		if (strcmp(status, "failed") == 0)
			printf("It is not retried: the test push failed for good.\n");
		else if (!disabled)
			printf("It is retried on the retry schedule; 'reghook deliveries "
			       "--webhook %s' shows its attempts.\n",
			       id);
		if (disabled) {
			printf("The webhook is disabled");
			print_reason(PQgetvalue(res, 0, 6));
			printf("%s.\n", strcmp(status, "failed") == 0
						? ""
						: ": the test push is retried once it is enabled");
		}
	}
	free(shown);
	PQclear(res);
	return rc;
}

static int run(const struct cli_command *cmd, const struct config *cfg, int argc, char **argv,
	       const char *fields, bool new_url)
{
	const char *sub = argv[1];
	bool has_fields = strcmp(fields, "{}") != 0;
	bool is_add = strcmp(sub, "add") == 0, is_set = strcmp(sub, "set") == 0;
	bool is_list = strcmp(sub, "list") == 0;
	static const char *const by_id[] = {"show", "enable", "disable", "remove", "test"};
	bool known = is_add || is_set || is_list;
	for (size_t i = 0; i < 5; i++)
		known = known || strcmp(sub, by_id[i]) == 0;

	if (!known)
		return cli_usage_error(cmd, "unknown subcommand '%s'", sub);
	if (has_fields && !is_add && !is_set)
		return cli_usage_error(cmd, "field options go with add and set");
	if (is_add && argc != 4)
		return cli_usage_error(cmd, "add takes NAMESPACE URL");
	/* It replaced the URL given, silently: the webhook went elsewhere. */
	if (is_add && new_url)
		return cli_usage_error(cmd,
				       "--url goes with set: add takes the URL as its argument");
	if (is_list && argc > 3)
		return cli_usage_error(cmd, "list takes at most a NAMESPACE");
	if (!is_add && !is_list) {
		if (argc != 3)
			return cli_usage_error(cmd, "%s takes one webhook ID", sub);
		if (!cli_parse_id(argv[2]))
			return cli_usage_error(cmd, "'%s' is not a webhook id", argv[2]);
	}
	if (is_set && !has_fields)
		return cli_usage_error(cmd, "set needs at least one field option");
	if (is_add && strstr(fields, "\"format\":\"template\"") && !strstr(fields, "\"template\":"))
		return cli_usage_error(cmd, "--format template needs --template FILE");
	char err[256];
	if (is_add && !urltemplate_check(argv[3], err, sizeof(err)))
		return cli_usage_error(cmd, "URL: %s", err);

	PGconn *conn = cli_connect(cfg);
	if (!conn)
		return CLI_FAILED;
	int rc;
	if (is_add) {
		const char *params[] = {argv[2], argv[3], fields};
		PGresult *res =
			cli_exec(conn, "SELECT reghook.webhook_add($1, $2, $3::jsonb)", 3, params);
		rc = res ? CLI_OK : CLI_FAILED;
		if (res)
			printf("Webhook %s added to namespace \"%s\". It starts disabled: "
			       "'reghook webhook enable %s' to start deliveries.\n",
			       PQgetvalue(res, 0, 0), argv[2], PQgetvalue(res, 0, 0));
		PQclear(res);
	} else if (is_list) {
		const char *params[] = {argc == 3 ? argv[2] : NULL};
		/* An empty table for a namespace mistyped would read as one without webhooks. */
		PGresult *res =
			argc == 3 ? cli_exec(conn,
					     "SELECT EXISTS (SELECT 1 FROM reghook.namespaces "
					     "WHERE name = $1)",
					     1, params)
				  : NULL;
		if (argc == 3 && !res) {
			rc = CLI_FAILED;
		} else if (res && strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
			char *shown = cli_printable(argv[2]);
			fprintf(stderr,
				"reghook: namespace \"%s\" does not exist, or is not yours\n",
				shown);
			free(shown);
			rc = CLI_FAILED;
		} else {
			rc = cli_run(conn, list_sql, 1, params, true);
		}
		PQclear(res);
	} else if (strcmp(sub, "show") == 0) {
		rc = webhook_show(conn, argv[2]);
	} else if (is_set) {
		const char *params[] = {argv[2], fields};
		rc = cli_run(conn, "SELECT reghook.webhook_set($1, $2::jsonb)", 2, params, false);
		if (rc == CLI_OK)
			printf("Webhook %s changed.\n", argv[2]);
		if (rc == CLI_OK && new_url)
			offer_retry(conn, argv[2]);
	} else if (strcmp(sub, "test") == 0) {
		rc = webhook_test(conn, cfg, argv[2]);
	} else {
		char sql[64];
		snprintf(sql, sizeof(sql), "SELECT reghook.webhook_%s($1)", sub);
		const char *params[] = {argv[2]};
		rc = cli_run(conn, sql, 1, params, false);
		if (rc == CLI_OK)
			printf("Webhook %s %s.\n", argv[2],
			       strcmp(sub, "remove") == 0   ? "removed"
			       : strcmp(sub, "enable") == 0 ? "enabled"
							    : "disabled");
	}
	PQfinish(conn);
	return rc;
}

static int cmd_webhook(const struct cli_command *cmd, int argc, char **argv)
{
	struct config cfg;
	struct buf fields = BUF_INIT;
	char err[256];
	int rc;

	if (cli_wants_help(cmd, argc, argv))
		return CLI_OK;
	/* Field options first: --max-attempts here is the webhook's, not the daemon's key. */
	bool new_url = false;
	if (!take_fields(&argc, argv, &fields, &new_url, err, sizeof(err))) {
		buf_free(&fields);
		return cli_usage_error(cmd, "%s", err);
	}
	if (!cli_config(cmd, &cfg, &argc, argv)) {
		buf_free(&fields);
		return CLI_USAGE;
	}
	if (cli_leftover_options(cmd, &argc, argv, &rc))
		; /* said */
	else if (argc < 2)
		rc = cli_usage_error(cmd, "missing subcommand");
	else
		rc = run(cmd, &cfg, argc, argv, fields.data, new_url);
	buf_free(&fields);
	config_free(&cfg);
	return rc;
}

const struct cli_command cmd_webhook_entry = {
	.name = "webhook",
	.run = cmd_webhook,
	.usage = "webhook add NS URL [options] | list [NS] | show ID | set ID [options] | "
		 "enable ID | disable ID | remove ID | test ID",
	.help = "webhooks: where a namespace's events are delivered",
	.details = "URL may hold {namespace} {name} {repository} {tag} {digest} {action}.\n",
	.print_options = webhook_options,
};
