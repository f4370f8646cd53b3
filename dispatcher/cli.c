/*
 * cli: helpers shared by the subcommands (see cli.h): usage errors, help,
 * configuration and a blocking database connection.
 */
#include "cli.h"

#include "jsonparse.h"
#include "buf.h"
#include "conf.h"
#include "pgc.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cli_print_command_help(const struct cli_command *cmd)
{
	printf("usage: reghook %s\n\n%s\n", cmd->usage, cmd->help);
	if (cmd->print_options || cmd->details)
		printf("\n");
	if (cmd->print_options)
		cmd->print_options();
	if (cmd->details)
		printf("%s", cmd->details);
	printf("\n");
	/* The configuration is serve's to describe; the other commands need only the database. */
	if (strcmp(cmd->name, "serve") == 0) {
		config_print_help(stdout);
		return;
	}
	printf("The database comes from the configuration: --config FILE, REGHOOK_CONFIG,\n"
	       "REGHOOK_DATABASE_URL or --database-url URL; 'reghook --help' lists every key.\n");
}

int cli_usage_error(const struct cli_command *cmd, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* It quotes what was typed: no control sequence of it reaches the terminal. */
	text_printable(msg);
	fprintf(stderr, "reghook %s: %s (usage: reghook %s)\n", cmd->name, msg, cmd->usage);
	return CLI_USAGE;
}

/*
 * True if arg begins with the option name, '_' standing for '-' and in any
 * case, as the configuration's flags are matched: "--max_attempts" and
 * "--Max-Attempts" are the command's own --max-attempts, never the
 * configuration key of the same name (which took them, silently).
 */
static bool option_prefix(const char *arg, const char *name, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = (char)tolower((unsigned char)arg[i]);
		if (c == '_' && i >= 2)
			c = '-';
		if (c != name[i])
			return false;
	}
	return true;
}

/* True if arg is "--name", with no "=value", that is not one of cmd's flags. */
static bool takes_value(const struct cli_command *cmd, const char *arg)
{
	if (strncmp(arg, "--", 2) != 0 || !arg[2] || strchr(arg, '='))
		return false;
	size_t n = strlen(arg);
	for (const char *f = cmd->flags; f && *f;) {
		size_t len = strcspn(f, " ");
		if (len == n && option_prefix(arg, f, n))
			return false;
		f += len + strspn(f + len, " ");
	}
	return true;
}

bool cli_wants_help(const struct cli_command *cmd, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--help") == 0 ||
		    (strcmp(argv[i], "-h") == 0 && !takes_value(cmd, argv[i - 1]))) {
			cli_print_command_help(cmd);
			return true;
		}
	}
	return false;
}

/* True if database_url is set; else prints how to set it. */
static bool cli_database_configured(const struct config *cfg)
{
	if (cfg->database_url && *cfg->database_url)
		return true;
	/* In a checkout where make run wrote its configuration, say how to use it. */
	bool make_run = access("var/reghook.conf", R_OK) == 0 && access("var/env", R_OK) == 0;
	config_error("database_url: not set (use --database-url, "
		     "REGHOOK_DATABASE_URL or the config file%s)",
		     make_run ? "; for make run's database, first '. var/env' in this shell" : "");
	return false;
}

/*
 * True if database_url is one a connection can be tried with; else says
 * why (pgc_conninfo_problem: never libpq's own message, which may quote
 * the password), rather than every log line, the service manager's status
 * line and each command's error saying "cannot connect" while the daemon
 * waited for a database it can never reach.
 */
static bool cli_database_readable(const struct config *cfg)
{
	char why[256];
	const char *problem = pgc_conninfo_problem(cfg->database_url, why, sizeof(why));
	if (!problem)
		return true;
	config_error("database_url: %s", problem);
	return false;
}

bool cli_config(const struct cli_command *cmd, struct config *cfg, int *argc, char **argv)
{
	if (!config_load(cfg, argc, argv))
		return false;
	/*
	 * What is left is text for the database (names, descriptions, roles,
	 * URLs, ids), which keeps UTF-8 only: a byte that is not is refused
	 * here, shown, before anything is sent (PostgreSQL's refusal named
	 * neither the argument nor the byte, and failed where a usage error is
	 * due). The configuration's own values (--config's path) are gone.
	 */
	for (int i = 1; i < *argc; i++) {
		size_t bad;
		if (jsonparse_utf8_ok((const unsigned char *)argv[i], strlen(argv[i]), &bad))
			continue;
		cli_usage_error(cmd, "argument '%s' is not UTF-8 text (byte %zu, 0x%02x)", argv[i],
				bad + 1, (unsigned char)argv[i][bad]);
		config_free(cfg);
		return false;
	}
	/* Every command works on the database: without one, nothing to do. */
	if (cli_database_configured(cfg) && cli_database_readable(cfg))
		return true;
	config_free(cfg);
	return false;
}

PGconn *cli_connect(const struct config *cfg)
{
	PGconn *conn = pgc_connectdb(cfg->database_url);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "reghook: cannot connect to the database: %s",
			PQerrorMessage(conn));
		PQfinish(conn);
		/* make run's database runs only while make run does: say so. */
		const char *path = getenv("REGHOOK_CONFIG");
		char why[256];
		/* Read a second time: a FIFO would hold the command for ever. */
		FILE *f = path ? conf_open_regular(path, "", why, sizeof(why)) : NULL;
		char line[128] = "";
		if (f && fgets(line, sizeof(line), f) && strstr(line, "Written by make run"))
			fprintf(stderr,
				"hint: the database of make run (REGHOOK_CONFIG=%s) runs "
				"only while make run does: is it running?\n",
				path);
		if (f)
			fclose(f);
		return NULL;
	}
	PGresult *res = cli_exec(conn, PGC_SESSION_SQL, 0, NULL);
	if (!res) {
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	/*
	 * db_timeout bounds each statement, as it does the daemon's: a row a
	 * person keeps locked (an open transaction) held a script's command
	 * for ever. Not migrate's, which may rewrite a large table.
	 */
	char ms[32];
	snprintf(ms, sizeof(ms), "%lld", cfg->db_timeout_ms);
	const char *params[] = {ms};
	res = cli_exec(conn, "SELECT pg_catalog.set_config('statement_timeout', $1, false)", 1,
		       params);
	if (!res) {
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

static bool stdout_closed;

void cli_stdout_was_closed(void)
{
	stdout_closed = true;
}

bool cli_output_written(void)
{
	static bool told;
	errno = 0;
	bool flushed = fflush(stdout) == 0;
	/* Closed: what went to the file that stands in for it is lost (main.c). */
	if (stdout_closed && flushed && lseek(STDOUT_FILENO, 0, SEEK_END) != 0) {
		if (!told)
			fprintf(stderr,
				"reghook: standard output is closed: the output was lost\n");
		told = true;
		return false;
	}
	if (flushed && !ferror(stdout))
		return true;
	if (!told)
		fprintf(stderr, "reghook: writing the output: %s\n",
			!flushed && errno ? strerror(errno) : "a write failed");
	told = true;
	return false;
}

bool cli_output_shown(void)
{
	if (stdout_closed) {
		fprintf(stderr, "reghook: standard output is closed\n");
		return false;
	}
	return cli_output_written();
}

bool cli_begin(PGconn *conn)
{
	PGresult *res = cli_exec(conn, "BEGIN", 0, NULL);
	PQclear(res);
	return res != NULL;
}

/* A failure of a statement on schema reghook that is not there, or not current. */
static bool schema_missing(const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	return state && msg && strstr(msg, "reghook") &&
	       (strcmp(state, "3F000") == 0 || strcmp(state, "42P01") == 0 ||
		strcmp(state, "42883") == 0 || strcmp(state, "42703") == 0);
}

PGresult *cli_exec(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return res;
	/* A message may quote what a member wrote (a reason, a name): printable only. */
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	char *text = xstrdup(msg ? msg : PQerrorMessage(conn));
	for (size_t len = strlen(text); len > 0 && text[len - 1] == '\n';)
		text[--len] = '\0'; /* libpq's own message ends in a newline */
	if (!msg)		    /* and may hold more lines, indented: one line, spaced */
		for (char *p = text; *p; p++)
			if (*p == '\n' || *p == '\t')
				*p = ' ';
	text_printable(text);
	fprintf(stderr, "reghook: %s\n", text);
	free(text);
	if (hint) {
		text = cli_printable(hint);
		fprintf(stderr, "hint: %s\n", text);
		free(text);
	} else if (schema_missing(res)) {
		fprintf(stderr, "hint: is database_url reghook's database, and its schema current? "
				"'reghook migrate' brings it current\n");
	}
	PQclear(res);
	return NULL;
}

static void remove_args(int *argc, char **argv, int at, int n)
{
	memmove(&argv[at], &argv[at + n], (size_t)(*argc - at - n + 1) * sizeof(char *));
	*argc -= n;
}

/* The options taken so far (copies: a name may be a caller's buffer): one
 * left over after them was given twice. */
static char taken[64][32];
static size_t ntaken;

static void took(const char *name)
{
	for (size_t i = 0; i < ntaken; i++)
		if (strcmp(taken[i], name) == 0)
			return;
	if (ntaken < sizeof(taken) / sizeof(taken[0]) && strlen(name) < sizeof(taken[0]))
		snprintf(taken[ntaken++], sizeof(taken[0]), "%s", name);
}

int cli_take_option(int *argc, char **argv, const char *name, const char **value)
{
	size_t n = strlen(name);
	for (int i = 1; i < *argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (!option_prefix(argv[i], name, n))
			continue;
		if (argv[i][n] == '=') {
			*value = argv[i] + n + 1;
			remove_args(argc, argv, i, 1);
			took(name);
			return 1;
		}
		if (argv[i][n] == '\0') {
			/* "--since --limit 5": --since has no value; --limit is not one. */
			if (i + 1 >= *argc || strncmp(argv[i + 1], "--", 2) == 0)
				return -1;
			*value = argv[i + 1];
			remove_args(argc, argv, i, 2);
			took(name);
			return 1;
		}
	}
	return 0;
}

bool cli_take_flag(int *argc, char **argv, const char *name)
{
	for (int i = 1; i < *argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (option_prefix(argv[i], name, strlen(name)) && argv[i][strlen(name)] == '\0') {
			remove_args(argc, argv, i, 1);
			took(name);
			return true;
		}
	}
	return false;
}

bool cli_leftover_options(const struct cli_command *cmd, int *argc, char **argv, int *rc)
{
	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			remove_args(argc, argv, i, 1); /* what follows is no option */
			return false;
		}
		if (!(strncmp(a, "--", 2) == 0 || (a[0] == '-' && a[1] != '\0')))
			continue;
		size_t len = strcspn(a, "=");
		for (size_t t = 0; t < ntaken; t++)
			if (strlen(taken[t]) == len && option_prefix(a, taken[t], len)) {
				*rc = cli_usage_error(cmd, "%s given twice", taken[t]);
				return true;
			}
		*rc = cli_usage_error(cmd, "unknown option '%s'", a);
		return true;
	}
	return false;
}

char *cli_printable(const char *s)
{
	char *out = xstrdup(s);
	text_printable(out);
	return out;
}

/* Columns a printable UTF-8 string takes: one per character (wide ones not counted twice). */
static size_t text_columns(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

/* s, then spaces to fill width columns, then sep. */
static void print_cell(const char *s, size_t width, const char *sep)
{
	fputs(s, stdout);
	for (size_t n = text_columns(s); n < width; n++)
		putchar(' ');
	fputs(sep, stdout);
}

void cli_print_table(const PGresult *res)
{
	int rows = PQntuples(res), cols = PQnfields(res);
	size_t *width = xcalloc((size_t)cols, sizeof(size_t));
	char **cell = xcalloc((size_t)rows * (size_t)cols + 1, sizeof(char *));
	for (int c = 0; c < cols; c++) {
		width[c] = text_columns(PQfname(res, c));
		for (int r = 0; r < rows; r++) {
			cell[r * cols + c] = cli_printable(PQgetvalue(res, r, c));
			if (text_columns(cell[r * cols + c]) > width[c])
				width[c] = text_columns(cell[r * cols + c]);
		}
	}
	for (int c = 0; c < cols; c++)
		print_cell(PQfname(res, c), c == cols - 1 ? 0 : width[c],
			   c == cols - 1 ? "\n" : "  ");
	for (int r = 0; r < rows; r++)
		for (int c = 0; c < cols; c++)
			print_cell(cell[r * cols + c], c == cols - 1 ? 0 : width[c],
				   c == cols - 1 ? "\n" : "  ");
	for (int i = 0; i < rows * cols; i++)
		free(cell[i]);
	free(cell);
	free(width);
}

int cli_take_options(const struct cli_command *cmd, const struct cli_option *opts, size_t n,
		     int *argc, char **argv, const char **values)
{
	for (size_t i = 0; i < n; i++) {
		values[i] = NULL;
		if (!opts[i].arg) {
			if (cli_take_flag(argc, argv, opts[i].flag))
				values[i] = "";
		} else if (cli_take_option(argc, argv, opts[i].flag, &values[i]) < 0) {
			return cli_usage_error(cmd, "%s needs a value (%s)", opts[i].flag,
					       opts[i].arg);
		}
	}
	return CLI_OK;
}

void cli_print_options(const struct cli_option *opts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char left[64];
		snprintf(left, sizeof(left), "%s%s%s", opts[i].flag, opts[i].arg ? " " : "",
			 opts[i].arg ? opts[i].arg : "");
		printf("  %-20s %s\n", left, opts[i].help);
	}
}

bool cli_parse_id(const char *s)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	return isdigit((unsigned char)*s) && !*end && v > 0 && errno == 0;
}

int cli_run(PGconn *conn, const char *sql, int nparams, const char *const *params, bool table)
{
	PGresult *res = cli_exec(conn, sql, nparams, params);
	if (!res)
		return CLI_FAILED;
	if (table)
		cli_print_table(res);
	PQclear(res);
	return CLI_OK;
}

int cli_parse_since(const struct cli_command *cmd, PGconn *conn, const char *since, char *out,
		    size_t outlen)
{
	/* An age is a duration as the configuration writes them. */
	long long ms;
	char age[32];
	const char *param = since;
	const char *sql = "SELECT $1::timestamptz";
	/*
	 * A bare number is neither: the configuration reads it as seconds, and
	 * PostgreSQL 20261201 as a date (--since 20261201 went 234 days back).
	 */
	if (*since && strspn(since, "0123456789") == strlen(since))
		return cli_usage_error(cmd,
				       "--since '%s': give an age with its unit (90s, 30m, 2h, 7d) "
				       "or a time (2026-12-01)",
				       since);
	bool is_age = conf_parse_duration(since, &ms);
	if (is_age) {
		snprintf(age, sizeof(age), "%lld", ms);
		param = age;
		sql = "SELECT now() - make_interval(secs => $1::bigint / 1000.0)";
	}
	PGresult *res = PQexecParams(conn, sql, 1, NULL, &param, NULL, NULL, 0);
	int rc = CLI_OK;
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
	} else {
		/* A data exception (class 22) is the value's fault; anything else the database's.
		 */
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state && strncmp(state, "22", 2) == 0 && is_age) {
			rc = cli_usage_error(
				cmd, "--since '%s': an age too long to count back from now", since);
		} else if (state && strncmp(state, "22", 2) == 0) {
			rc = cli_usage_error(
				cmd, "--since '%s' is neither an age (30m, 2h, 7d) nor a time",
				since);
		} else {
			fprintf(stderr, "reghook: %s", PQerrorMessage(conn));
			rc = CLI_FAILED;
		}
	}
	PQclear(res);
	return rc;
}
