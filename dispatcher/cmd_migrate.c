/*
 * cmd_migrate: `reghook migrate`. Runs the same asynchronous migrator as the
 * daemon, on a private event loop, and reports what it applied.
 */
#include "cli.h"
#include "log.h"
#include "migrate.h"

#include <stdio.h>

struct migrate_cmd {
	struct event_base *base;
	int rc;
	bool done;
};

static void on_done(bool ok, const char *error, int applied, void *arg)
{
	struct migrate_cmd *m = arg;
	if (ok) {
		printf("schema current at version %d (%d migration(s) applied)\n",
		       migrate_latest_version(), applied);
		m->rc = CLI_OK;
	} else {
		fprintf(stderr, "reghook migrate: %s\n", error);
		m->rc = CLI_FAILED;
	}
	m->done = true;
	event_base_loopexit(m->base, NULL);
}

static void on_up(struct pgc *c, void *arg)
{
	migrate_run(c, on_done, arg);
}

static void on_down(struct pgc *c, const char *why, void *arg)
{
	struct migrate_cmd *m = arg;
	if (m->done)
		return;
	fprintf(stderr, "reghook migrate: database: %s\n", why);
	m->rc = CLI_FAILED;
	m->done = true;
	event_base_loopexit(m->base, NULL);
}

static int cmd_migrate(const struct cli_command *cmd, int argc, char **argv)
{
	struct config cfg;
	struct migrate_cmd m = {NULL, CLI_FAILED, false};
	static const struct pgc_hooks hooks = {.up = on_up, .down = on_down};

	if (cli_wants_help(cmd, argc, argv))
		return CLI_OK;
	if (!cli_config(cmd, &cfg, &argc, argv))
		return CLI_USAGE;
	if (argc > 1) {
		config_free(&cfg);
		return cli_usage_error(cmd, "unexpected argument '%s'", argv[1]);
	}
	m.base = event_base_new();
	struct pgc *c = pgc_new(m.base, cfg.database_url, &hooks, &m);
	event_base_dispatch(m.base);
	pgc_free(c);
	event_base_free(m.base);
	config_free(&cfg);
	return m.rc;
}

const struct cli_command cmd_migrate_entry = {
	.name = "migrate",
	.run = cmd_migrate,
	.usage = "migrate [--config FILE] [--database-url URL]",
	.help = "apply the schema migrations (serve also does it at start)",
};
