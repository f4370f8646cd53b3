/*
 * cmd_deliveries: `reghook deliveries` (the delivery history as a table or
 * JSON, read from the view reghook.delivery_history) and `reghook
 * retrigger` (wrapping reghook.retrigger() and reghook.retrigger_failed()).
 * Whatever these print, a SQL user gets from the same view and functions,
 * with the same row-level security.
 */
#include "cli.h"
#include "buf.h"
#include "conf.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LIMIT "50"
#define MAX_LIMIT 100000

/*
 * --since takes an age ("90s", "30m", "2h", "7d", "1w": a duration as in
 * the configuration) or anything
 * PostgreSQL reads as a timestamptz ("2026-11-22", "yesterday"). Writes
 * the SQL-ready timestamptz text into out; CLI_OK, or the exit code after
 * printing why not.
 */
static int parse_since(const struct cli_command *cmd, PGconn *conn, const char *since, char *out,
		       size_t outlen)
{
	/* An age is a duration as the configuration writes them. */
	long long ms;
	char age[32];
	const char *param = since;
	const char *sql = "SELECT $1::timestamptz";
	if (conf_parse_duration(since, &ms)) {
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
		if (state && strncmp(state, "22", 2) == 0) {
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

/*
 * Newest first: deliveries not tried yet (only pending or in flight ones
 * can be) by creation, attempts by time, each half limited on its own so
 * that both come from an index on a large history.
 */
static const char history_sql[] =
	"WITH h AS (SELECT * FROM ("
	" (SELECT * FROM reghook.delivery_history"
	"  WHERE attempt IS NULL AND status IN ('pending', 'in_flight')"
	"  AND ($1::bigint IS NULL OR webhook_id = $1) AND ($2::text IS NULL OR status = $2)"
	"  AND ($3::timestamptz IS NULL OR created_at >= $3)"
	"  ORDER BY created_at DESC LIMIT $4)"
	" UNION ALL"
	" (SELECT * FROM reghook.delivery_history"
	"  WHERE attempt IS NOT NULL"
	"  AND ($1::bigint IS NULL OR webhook_id = $1) AND ($2::text IS NULL OR status = $2)"
	"  AND ($3::timestamptz IS NULL OR attempted_at >= $3)"
	"  ORDER BY attempted_at DESC LIMIT $4)"
	") u ORDER BY coalesce(attempted_at, created_at) DESC LIMIT $4)";

static const char table_sql[] =
	"SELECT delivery_id, coalesce(attempt::text, '-') AS attempt, webhook_id AS webhook,"
	" repository || coalesce(':' || tag, coalesce('@' || digest, '')) AS image, action, status,"
	" coalesce(response_status::text, '') AS http, coalesce(duration_ms::text, '') AS ms,"
	" coalesce(to_char(attempted_at, 'YYYY-MM-DD HH24:MI:SS'), '') AS attempted_at,"
	" coalesce(to_char(next_attempt_at, 'YYYY-MM-DD HH24:MI:SS'), '') AS next_attempt_at,"
	" coalesce(error, '') AS error,"
	" coalesce(callback_state || coalesce(': ' || nullif(callback_description, ''), ''), '')"
	" AS callback"
	" FROM h ORDER BY coalesce(attempted_at, created_at) DESC";

static const char json_sql[] = "SELECT coalesce(json_agg(h ORDER BY coalesce(attempted_at, "
			       "created_at) DESC), '[]') FROM h";

static int deliveries(const struct cli_command *cmd, PGconn *conn, const char *webhook,
		      const char *status, const char *since, const char *limit, bool json)
{
	char since_ts[128];
	int rc = since ? parse_since(cmd, conn, since, since_ts, sizeof(since_ts)) : CLI_OK;
	if (rc != CLI_OK)
		return rc;
	struct buf sql = BUF_INIT;
	buf_printf(&sql, "%s %s", history_sql, json ? json_sql : table_sql);
	const char *params[] = {webhook, status, since ? since_ts : NULL, limit};
	PGresult *res = cli_exec(conn, sql.data, 4, params);
	buf_free(&sql);
	if (!res)
		return CLI_FAILED;
	if (json)
		printf("%s\n", PQgetvalue(res, 0, 0));
	else
		cli_print_table(res);
	PQclear(res);
	return CLI_OK;
}

enum { D_WEBHOOK, D_STATUS, D_SINCE, D_LIMIT, D_JSON, D_NOPTS };
static const struct cli_option deliveries_opts[D_NOPTS] = {
	[D_WEBHOOK] = {"--webhook", "ID", "only this webhook's deliveries"},
	[D_STATUS] = {"--status", "S",
		      "only deliveries now pending, in_flight, succeeded or failed"},
	[D_SINCE] =
		{"--since", "T",
		 "only attempts since T: an age (30m, 2h, 7d, 1w) or a time (2026-11-22 08:00)"},
	[D_LIMIT] = {"--limit", "N", "at most N lines (default " DEFAULT_LIMIT ")"},
	[D_JSON] = {"--json", NULL, "a JSON array of delivery_history rows instead of a table"},
};

void cmd_deliveries_options(void)
{
	cli_print_options(deliveries_opts, D_NOPTS);
}

int cmd_deliveries(const struct cli_command *cmd, int argc, char **argv)
{
	struct config cfg;
	const char *v[D_NOPTS];
	static const char *const statuses[] = {"pending", "in_flight", "succeeded", "failed"};
	int rc = CLI_USAGE;

	if (cli_wants_help(cmd, argc, argv))
		return CLI_OK;
	if (!cli_config(cmd, &cfg, &argc, argv))
		return CLI_USAGE;
	if (cli_take_options(cmd, deliveries_opts, D_NOPTS, &argc, argv, v) != CLI_OK)
		goto done;
	const char *webhook = v[D_WEBHOOK], *status = v[D_STATUS], *since = v[D_SINCE];
	const char *limit = v[D_LIMIT] ? v[D_LIMIT] : DEFAULT_LIMIT;
	bool json = v[D_JSON] != NULL;
	bool known_status = false;
	for (size_t i = 0; status && i < sizeof(statuses) / sizeof(statuses[0]); i++)
		known_status |= strcmp(status, statuses[i]) == 0;
	if (cli_unknown_option(argc, argv)) {
		rc = cli_usage_error(cmd, "unknown option '%s'", cli_unknown_option(argc, argv));
	} else if (since && !*since) {
		rc = cli_usage_error(cmd, "--since needs an age (30m, 2h, 7d) or a time");
	} else if (argc != 1) {
		rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[1]);
	} else if (webhook && !cli_parse_id(webhook)) {
		rc = cli_usage_error(cmd, "--webhook '%s' is not a webhook id", webhook);
	} else if (status && !known_status) {
		rc = cli_usage_error(cmd,
				     "--status must be pending, in_flight, succeeded or failed");
	} else if (!cli_parse_id(limit) || atoll(limit) > MAX_LIMIT) {
		rc = cli_usage_error(cmd, "--limit must be a number from 1 to %d", MAX_LIMIT);
	} else {
		PGconn *conn = cli_connect(&cfg);
		rc = CLI_FAILED;
		if (conn) {
			rc = deliveries(cmd, conn, webhook, status, since, limit, json);
			PQfinish(conn);
		}
	}
done:
	config_free(&cfg);
	return rc;
}

static bool is_uuid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

/* Each id on its own: one that cannot be retriggered does not stop the others. */
static int retrigger_ids(PGconn *conn, int n, char **ids)
{
	int rc = CLI_OK;
	for (int i = 0; i < n; i++) {
		const char *params[] = {ids[i]};
		PGresult *res = cli_exec(conn, "SELECT reghook.retrigger($1::uuid)", 1, params);
		if (!res) {
			rc = CLI_FAILED;
			continue;
		}
		printf("Delivery %s queued again.\n", ids[i]);
		PQclear(res);
	}
	return rc;
}

/* Runs a function of one webhook that returns a count, and prints "N <before> delivery|deliveries
 * <after>". */
static int run_counted(PGconn *conn, const char *sql, int nparams, const char *const *params,
		       const char *before, const char *after)
{
	PGresult *res = cli_exec(conn, sql, nparams, params);
	if (!res)
		return CLI_FAILED;
	const char *n = PQgetvalue(res, 0, 0);
	printf("%s %s%s %s\n", n, before, strcmp(n, "1") == 0 ? "delivery" : "deliveries", after);
	PQclear(res);
	return CLI_OK;
}

static int retrigger_failed(const struct cli_command *cmd, PGconn *conn, const char *webhook,
			    const char *since)
{
	char since_ts[128], after[64];
	int rc = since ? parse_since(cmd, conn, since, since_ts, sizeof(since_ts)) : CLI_OK;
	if (rc != CLI_OK)
		return rc;
	const char *params[] = {webhook, since ? since_ts : NULL};
	snprintf(after, sizeof(after), "of webhook %s queued again.", webhook);
	return run_counted(conn, "SELECT reghook.retrigger_failed($1::bigint, $2::timestamptz)", 2,
			   params, "failed ", after);
}

static int retry_waiting(PGconn *conn, const char *webhook)
{
	char after[96];
	const char *params[] = {webhook};
	snprintf(after, sizeof(after), "of webhook %s waiting for a next attempt: tried now.",
		 webhook);
	return run_counted(conn, "SELECT reghook.retry_waiting($1::bigint)", 1, params, "", after);
}

enum { R_WEBHOOK, R_FAILED, R_WAITING, R_SINCE, R_NOPTS };
static const struct cli_option retrigger_opts[R_NOPTS] = {
	[R_WEBHOOK] = {"--webhook", "ID", "with --failed or --waiting: the webhook"},
	[R_FAILED] = {"--failed", NULL, "every failed delivery of the webhook"},
	[R_WAITING] = {"--waiting", NULL,
		       "every delivery of the webhook waiting for its next attempt: try now"},
	[R_SINCE] =
		{"--since", "T",
		 "with --failed: only those that failed since T (an age such as 1d, or a time)"},
};

void cmd_retrigger_options(void)
{
	printf("  %-20s %s\n", "ID..", "delivery ids (the delivery_id column of deliveries)");
	cli_print_options(retrigger_opts, R_NOPTS);
}

int cmd_retrigger(const struct cli_command *cmd, int argc, char **argv)
{
	struct config cfg;
	const char *v[R_NOPTS];
	int rc = CLI_USAGE;

	if (cli_wants_help(cmd, argc, argv))
		return CLI_OK;
	if (!cli_config(cmd, &cfg, &argc, argv))
		return CLI_USAGE;
	if (cli_take_options(cmd, retrigger_opts, R_NOPTS, &argc, argv, v) != CLI_OK)
		goto done;
	const char *webhook = v[R_WEBHOOK], *since = v[R_SINCE];
	bool failed = v[R_FAILED] != NULL, waiting = v[R_WAITING] != NULL;
	/* Everything after "--" is an id too. */
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--") == 0) {
			memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof(char *));
			argc--;
			break;
		}
	const char *bad_id = NULL;
	for (int i = 1; i < argc && !bad_id; i++)
		if (!is_uuid(argv[i]))
			bad_id = argv[i];
	if (since && !*since) {
		rc = cli_usage_error(cmd, "--since needs an age (1d) or a time");
	} else if (bad_id && strncmp(bad_id, "--", 2) == 0) {
		rc = cli_usage_error(cmd, "unknown option '%s'", bad_id);
	} else if (cli_unknown_option(argc, argv)) {
		rc = cli_usage_error(cmd, "unknown option '%s'", cli_unknown_option(argc, argv));
	} else if ((webhook || failed || waiting || since) && argc > 1) {
		rc = cli_usage_error(
			cmd, "give delivery ids, or --webhook ID --failed or --waiting, not both");
	} else if (!webhook && !failed && !waiting && !since && argc < 2) {
		rc = cli_usage_error(cmd, "missing delivery ids");
	} else if (failed && waiting) {
		rc = cli_usage_error(cmd,
				     "--failed and --waiting go apart: run one, then the other");
	} else if (since && !failed) {
		rc = cli_usage_error(cmd, "--since goes with --failed");
	} else if (webhook && !failed && !waiting) {
		rc = cli_usage_error(cmd, "--webhook goes with --failed or --waiting");
	} else if ((failed || waiting) && !webhook) {
		rc = cli_usage_error(cmd, "%s needs --webhook ID",
				     failed ? "--failed" : "--waiting");
	} else if (webhook && !cli_parse_id(webhook)) {
		rc = cli_usage_error(cmd, "--webhook '%s' is not a webhook id", webhook);
	} else if (bad_id) {
		rc = cli_usage_error(cmd, "'%s' is not a delivery id", bad_id);
	} else {
		PGconn *conn = cli_connect(&cfg);
		rc = CLI_FAILED;
		if (conn) {
			rc = failed    ? retrigger_failed(cmd, conn, webhook, since)
			     : waiting ? retry_waiting(conn, webhook)
				       : retrigger_ids(conn, argc - 1, argv + 1);
			PQfinish(conn);
		}
	}
done:
	config_free(&cfg);
	return rc;
}
