/*
 * cmd_retrigger: `reghook retrigger`: deliveries queued again by id
 * (reghook.retrigger()), every failed one of a webhook
 * (reghook.retrigger_failed()), or a webhook's waiting ones tried now
 * (reghook.retry_waiting()). A SQL user calls the same functions, with the
 * same row-level security.
 */
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

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
		if (!res && PQstatus(conn) == CONNECTION_BAD) {
			/* Not a line for each id left: the rest were not tried. */
			fprintf(stderr,
				"reghook: the connection was lost; %d of %d deliveries not tried\n",
				n - i - 1, n);
			return CLI_FAILED;
		}
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
	int rc = since ? cli_parse_since(cmd, conn, since, since_ts, sizeof(since_ts)) : CLI_OK;
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

static void retrigger_options(void)
{
	printf("  %-20s %s\n", "ID..", "delivery ids (the delivery_id column of deliveries)");
	cli_print_options(retrigger_opts, R_NOPTS);
}

static int cmd_retrigger(const struct cli_command *cmd, int argc, char **argv)
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
	if (since && !*since) {
		rc = cli_usage_error(cmd, "--since needs an age (1d) or a time");
		goto done;
	}
	/* An option given twice or unknown is said as such; "--" goes, and
	 * everything after it is an id. */
	if (cli_leftover_options(cmd, &argc, argv, &rc))
		goto done;
	const char *bad_id = NULL;
	for (int i = 1; i < argc && !bad_id; i++)
		if (!is_uuid(argv[i]))
			bad_id = argv[i];
	if ((webhook || failed || waiting || since) && argc > 1) {
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

const struct cli_command cmd_retrigger_entry = {
	.name = "retrigger",
	.run = cmd_retrigger,
	.usage = "retrigger ID.. | retrigger --webhook ID --failed [--since T] | "
		 "retrigger --webhook ID --waiting",
	.help = "queue finished deliveries again (same delivery id; attempts continue "
		"numbering), or try waiting ones now",
	.print_options = retrigger_options,
	.flags = "--failed --waiting",
};
