/*
 * cmd_registry: `reghook registry add NAME [--namespaces NS,..]`,
 * `reghook registry rotate NAME` and `reghook registry list`. add wraps
 * reghook.registry_add() and prints the token (once: only its hash is
 * kept) with the notifications: block to paste into the registry's
 * config.yml; rotate gives the source a new one (registry_rotate()).
 */
#include "buf.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * "a, b" -> "{"a","b"}", a text[] literal, each name without the spaces
 * around it (names hold no quotes or braces: SQL checks them). NULL for a
 * list with an empty name ("", "a,", "a,,b"): a scope of no namespace
 * would refuse every event.
 */
static char *array_literal(const char *list)
{
	struct buf b = BUF_INIT;
	buf_putc(&b, '{');
	for (const char *p = list;; p++) {
		size_t n = strcspn(p, ",");
		const char *end = p + n;
		while (p < end && *p == ' ')
			p++;
		while (end > p && end[-1] == ' ')
			end--;
		if (p == end) {
			buf_free(&b);
			return NULL;
		}
		buf_puts(&b, b.len > 1 ? ",\"" : "\"");
		for (; p < end; p++) {
			if (*p == '"' || *p == '\\')
				buf_putc(&b, '\\');
			buf_putc(&b, *p);
		}
		buf_putc(&b, '"');
		p += strcspn(p, ",");
		if (!*p)
			break;
	}
	buf_putc(&b, '}');
	return buf_steal(&b);
}

static void print_snippet(const struct config *cfg, const char *token)
{
	struct buf base = BUF_INIT;
	config_public_url(cfg, &base);
	printf("notifications:\n"
	       "  endpoints:\n"
	       "    - name: reghook\n"
	       "      url: %s/events\n"
	       "      headers:\n"
	       "        Authorization: [Bearer %s]\n"
	       "      timeout: 5s\n"
	       "      threshold: 5\n"
	       "      backoff: 5s\n"
	       "      # Recommended: the registry then sends no blob, pull or mount events at "
	       "all.\n"
	       "      ignore:\n"
	       "        mediatypes:\n"
	       "          - application/octet-stream\n"
	       "        actions:\n"
	       "          - pull\n"
	       "          - mount\n",
	       base.data, token);
	buf_free(&base);
}

/* After a snippet shown and committed: a url in it that no registry can reach is said. */
static void note_unreachable_url(const struct config *cfg, int rc)
{
	if (rc == CLI_OK && config_public_url_unreachable(cfg))
		fprintf(stderr,
			"\nNote: public_url is not set, so the url above names listen (%s), "
			"which no registry can reach: set public_url, or write the address the "
			"registry reaches reghook at in its place.\n",
			cfg->listen);
}

/*
 * A token is shown once and kept nowhere else: the transaction that made it
 * commits only once it was written out (a full disk, a closed pipe with
 * SIGPIPE ignored lost it, the source made or the old token revoked).
 */
static int commit_if_shown(PGconn *conn, const char *kept)
{
	if (!cli_output_shown()) {
		PQclear(PQexec(conn, "ROLLBACK"));
		fprintf(stderr, "reghook: the token could not be shown, so %s\n", kept);
		return CLI_FAILED;
	}
	PGresult *res = cli_exec(conn, "COMMIT", 0, NULL);
	PQclear(res);
	return res ? CLI_OK : CLI_FAILED;
}

static int registry_add(const struct cli_command *cmd, const struct config *cfg, int argc,
			char **argv, const char *namespaces)
{
	if (argc != 3)
		return cli_usage_error(cmd, argc < 3 ? "missing NAME" : "unexpected argument '%s'",
				       argc < 3 ? "" : argv[3]);
	char *scope = namespaces ? array_literal(namespaces) : NULL;
	if (namespaces && !scope)
		return cli_usage_error(cmd, "--namespaces: an empty name in '%s'", namespaces);
	PGconn *conn = cli_connect(cfg);
	if (!conn) {
		free(scope);
		return CLI_FAILED;
	}
	const char *params[] = {argv[2], scope};
	PGresult *res = cli_begin(conn) ? cli_exec(conn,
						   "SELECT id, token FROM "
						   "reghook.registry_add($1, $2::text[])",
						   2, params)
					: NULL;
	free(scope);
	if (!res) {
		PQfinish(conn);
		return CLI_FAILED;
	}
	const char *token = PQgetvalue(res, 0, 1);
	printf("Registry source \"%s\" created (id %s)%s%s.\n\n", argv[2], PQgetvalue(res, 0, 0),
	       namespaces ? ", limited to namespaces " : "", namespaces ? namespaces : "");
	printf("Its token, shown this once (reghook keeps only a hash of it):\n\n    %s\n\n",
	       token);
	printf("Paste this into the registry's config.yml and restart the registry:\n\n");
	print_snippet(cfg, token);
	PQclear(res);
	int rc = commit_if_shown(conn, "no registry source was created");
	note_unreachable_url(cfg, rc);
	PQfinish(conn);
	return rc;
}

static int registry_rotate(const struct cli_command *cmd, const struct config *cfg, int argc,
			   char **argv)
{
	if (argc != 3)
		return cli_usage_error(cmd, argc < 3 ? "missing NAME" : "unexpected argument '%s'",
				       argc < 3 ? "" : argv[3]);
	PGconn *conn = cli_connect(cfg);
	if (!conn)
		return CLI_FAILED;
	const char *params[] = {argv[2]};
	PGresult *res = cli_begin(conn)
				? cli_exec(conn, "SELECT reghook.registry_rotate($1)", 1, params)
				: NULL;
	if (!res) {
		PQfinish(conn);
		return CLI_FAILED;
	}
	const char *token = PQgetvalue(res, 0, 0);
	printf("Registry source \"%s\" has a new token; the old one is refused from now on.\n\n",
	       argv[2]);
	printf("Its token, shown this once (reghook keeps only a hash of it):\n\n    %s\n\n",
	       token);
	printf("Put it in the registry's config.yml in place of the old one (the Authorization "
	       "header below) and restart the registry:\n\n");
	print_snippet(cfg, token);
	PQclear(res);
	int rc = commit_if_shown(conn, "the old token stays the registry's");
	note_unreachable_url(cfg, rc);
	PQfinish(conn);
	return rc;
}

static int registry_list(const struct cli_command *cmd, const struct config *cfg, int argc,
			 char **argv)
{
	if (argc != 2)
		return cli_usage_error(cmd, "unexpected argument '%s'", argv[2]);
	PGconn *conn = cli_connect(cfg);
	if (!conn)
		return CLI_FAILED;
	PGresult *res =
		cli_exec(conn,
			 "SELECT id, name, coalesce(array_to_string(namespaces, ','), '(all)')"
			 " AS namespaces, date_trunc('second', created_at) AS created_at"
			 " FROM reghook.registry_sources ORDER BY id",
			 0, NULL);
	int rc = res ? CLI_OK : CLI_FAILED;
	if (res)
		cli_print_table(res);
	PQclear(res);
	PQfinish(conn);
	return rc;
}

static int cmd_registry(const struct cli_command *cmd, int argc, char **argv)
{
	struct config cfg;
	const char *namespaces = NULL;
	int rc;

	if (cli_wants_help(cmd, argc, argv))
		return CLI_OK;
	if (!cli_config(cmd, &cfg, &argc, argv))
		return CLI_USAGE;
	if (cli_take_option(&argc, argv, "--namespaces", &namespaces) < 0)
		rc = cli_usage_error(cmd, "--namespaces needs a value");
	else if (cli_leftover_options(cmd, &argc, argv, &rc))
		; /* said */
	else if (argc < 2)
		rc = cli_usage_error(cmd, "missing subcommand");
	else if (strcmp(argv[1], "add") == 0)
		rc = registry_add(cmd, &cfg, argc, argv, namespaces);
	else if (namespaces)
		rc = cli_usage_error(cmd, "--namespaces goes with add");
	else if (strcmp(argv[1], "list") == 0)
		rc = registry_list(cmd, &cfg, argc, argv);
	else if (strcmp(argv[1], "rotate") == 0)
		rc = registry_rotate(cmd, &cfg, argc, argv);
	else
		rc = cli_usage_error(cmd, "unknown subcommand '%s'", argv[1]);
	config_free(&cfg);
	return rc;
}

const struct cli_command cmd_registry_entry = {
	.name = "registry",
	.run = cmd_registry,
	.usage = "registry add NAME [--namespaces NS,..] | registry rotate NAME | registry list",
	.help = "registry sources: add and rotate print the token and the config.yml snippet",
	.details =
		"  --namespaces NS,..   the namespaces (and those below them) this registry may\n"
		"                       post events for; by default all\n",
};
