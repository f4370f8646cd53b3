/*
 * cmd_namespace: `reghook namespace add NAME [--private] [--description T]`,
 * `namespace list` and `namespace grant NS ROLE owner|contributor|viewer`,
 * wrapping reghook.namespace_add() and reghook.namespace_grant().
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmd_namespace(const struct cli_command *cmd, int argc, char **argv)
{
	struct config cfg;
	const char *description = NULL;
	int rc = CLI_USAGE;

	if (cli_wants_help(cmd, argc, argv))
		return CLI_OK;
	if (!cli_config(cmd, &cfg, &argc, argv))
		return CLI_USAGE;
	bool private = cli_take_flag(&argc, argv, "--private");
	int taken = cli_take_option(&argc, argv, "--description", &description);
	bool said = taken >= 0 && cli_leftover_options(cmd, &argc, argv, &rc);
	/* The subcommand is what is left once the options (and --) are taken. */
	const char *sub = argc >= 2 ? argv[1] : "";
	bool is_add = strcmp(sub, "add") == 0;
	if (taken < 0) {
		rc = cli_usage_error(cmd, "--description needs a value");
	} else if (said) {
		/* said */
	} else if (argc < 2) {
		rc = cli_usage_error(cmd, "missing subcommand");
	} else if (!is_add && (private || description)) {
		rc = cli_usage_error(cmd, "--private and --description go with add");
	} else if (is_add && argc != 3) {
		rc = cli_usage_error(cmd, "add takes one NAME");
	} else if (strcmp(sub, "list") == 0 && argc != 2) {
		rc = cli_usage_error(cmd, "list takes no argument");
	} else if (strcmp(sub, "grant") == 0 && argc != 5) {
		rc = cli_usage_error(cmd, "grant takes NS ROLE owner|contributor|viewer");
	} else if (strcmp(sub, "grant") == 0 && strlen(argv[3]) > 63) {
		/* PostgreSQL keeps 63 bytes of a name: another role would have it. */
		rc = cli_usage_error(cmd, "ROLE: a role name is at most 63 bytes, not %zu",
				     strlen(argv[3]));
	} else if (strcmp(sub, "grant") == 0 && strcmp(argv[4], "owner") != 0 &&
		   strcmp(argv[4], "contributor") != 0 && strcmp(argv[4], "viewer") != 0) {
		rc = cli_usage_error(cmd, "access must be owner, contributor or viewer, not '%s'",
				     argv[4]);
	} else if (!is_add && strcmp(sub, "list") != 0 && strcmp(sub, "grant") != 0) {
		rc = cli_usage_error(cmd, "unknown subcommand '%s'", sub);
	} else {
		PGconn *conn = cli_connect(&cfg);
		rc = CLI_FAILED;
		if (conn && is_add) {
			const char *params[] = {argv[2], description ? description : "",
						private ? "true" : "false"};
			rc = cli_run(conn, "SELECT reghook.namespace_add($1, $2, $3::boolean)", 3,
				     params, false);
			if (rc == CLI_OK)
				printf("Namespace \"%s\" added.\n", argv[2]);
		} else if (conn && strcmp(sub, "list") == 0) {
			rc = cli_run(
				conn,
				"SELECT n.name, CASE WHEN n.is_private THEN 'private' ELSE "
				"'public' END"
				" AS visibility, n.description,"
				" (SELECT count(*) FROM reghook.webhooks w WHERE w.namespace_id = "
				"n.id)"
				" AS webhooks,"
				" coalesce((SELECT string_agg(m.role_name || ':' || m.access, ', '"
				" ORDER BY m.role_name) FROM reghook.namespace_members m"
				" WHERE m.namespace_id = n.id), '') AS members"
				" FROM reghook.namespaces n ORDER BY n.name",
				0, NULL, true);
		} else if (conn) {
			const char *params[] = {argv[2], argv[3], argv[4]};
			rc = cli_run(conn, "SELECT reghook.namespace_grant($1, $2, $3)", 3, params,
				     false);
			if (rc == CLI_OK) {
				char *role = cli_printable(argv[3]);
				printf("%s is now %s of namespace \"%s\".\n", role, argv[4],
				       argv[2]);
				free(role);
			}
		}
		if (conn)
			PQfinish(conn);
	}
	config_free(&cfg);
	return rc;
}

const struct cli_command cmd_namespace_entry = {
	.name = "namespace",
	.run = cmd_namespace,
	.usage = "namespace add NAME [--private] [--description T] | namespace list | "
		 "namespace grant NS ROLE owner|contributor|viewer",
	.help = "namespaces, and which database roles may see and manage them",
	.details = "  --private            shown as is_private in payloads\n"
		   "  --description T      shown as the repository description in payloads\n",
	.flags = "--private",
};
