/*
 * main: the reghook binary's entry point and its table of commands. Each
 * command's usage and help live in this one table, so `reghook --help`,
 * `reghook CMD --help` and the dispatch cannot drift apart.
 */
#include "cli.h"
#include "config.h"

#include <stdio.h>
#include <string.h>

static const struct cli_command commands[] = {
	{"serve", cmd_serve, "serve [--config FILE] [--KEY VALUE ...]",
	 "run the daemon: receiver, delivery workers, janitor", NULL, NULL},
	{"migrate", cmd_migrate, "migrate [--config FILE] [--database-url URL]",
	 "apply the schema migrations (serve also does it at start)", NULL, NULL},
	{"registry", cmd_registry, "registry add NAME [--namespaces NS,..] | registry list",
	 "registry sources: add prints the token and the config.yml snippet",
	 "  --namespaces NS,..   the namespaces (and those below them) this registry may\n"
	 "                       post events for; by default all\n",
	 NULL},
	{"namespace", cmd_namespace,
	 "namespace add NAME [--private] [--description T] | namespace list | "
	 "namespace grant NS ROLE owner|contributor|viewer",
	 "namespaces, and which database roles may see and manage them",
	 "  --private            shown as is_private in payloads\n"
	 "  --description T      shown as the repository description in payloads\n",
	 NULL},
	{"webhook", cmd_webhook,
	 "webhook add NS URL [options] | list [NS] | show ID | set ID [options] | enable ID | "
	 "disable ID | remove ID | test ID",
	 "webhooks: where a namespace's events are delivered",
	 "URL may hold {namespace} {name} {repository} {tag} {digest} {action}.\n",
	 cmd_webhook_options},
	{"deliveries", cmd_deliveries,
	 "deliveries [--webhook ID] [--status S] [--since T] [--limit N] [--json]",
	 "delivery history, newest first: one line per attempt, and deliveries not tried yet", NULL,
	 cmd_deliveries_options},
	{"retrigger", cmd_retrigger,
	 "retrigger ID.. | retrigger --webhook ID --failed [--since T] | "
	 "retrigger --webhook ID --waiting",
	 "queue finished deliveries again (same delivery id; attempts continue numbering), "
	 "or try waiting ones now",
	 NULL, cmd_retrigger_options},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
	fprintf(out, "usage: reghook COMMAND [ARGS] [--config FILE] [--KEY VALUE ...]\n\n"
		     "reghook receives a private Docker registry's notifications and delivers\n"
		     "Docker Hub style webhooks. Commands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].help);
	fprintf(out, "\n'reghook COMMAND --help' describes one command.\n\n");
	config_print_help(out);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "reghook: missing command (try 'reghook --help')\n");
		return CLI_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return CLI_OK;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("reghook %s\n", REGHOOK_VERSION);
		return CLI_OK;
	}
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(&commands[i], argc - 1, argv + 1);
	fprintf(stderr, "reghook: unknown command '%s' (try 'reghook --help')\n", argv[1]);
	return CLI_USAGE;
}
