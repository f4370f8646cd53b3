/*
 * main: the reghook binary's entry point and its list of commands. Each
 * command's usage and help live in its own entry, beside its code (as
 * tmux's cmd_entry), and `reghook --help`, `reghook CMD --help` and the
 * dispatch all read the entries, so they cannot drift apart.
 */
#include "cli.h"
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* In the order `reghook --help` lists them. */
static const struct cli_command *const commands[] = {
	&cmd_serve_entry,   &cmd_migrate_entry,	   &cmd_registry_entry,	 &cmd_namespace_entry,
	&cmd_webhook_entry, &cmd_deliveries_entry, &cmd_retrigger_entry,
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
	fprintf(out, "usage: reghook COMMAND [ARGS] [--config FILE] [--KEY VALUE ...]\n\n"
		     "reghook receives a private Docker registry's notifications and delivers\n"
		     "Docker Hub style webhooks. Commands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %-12s %s\n", commands[i]->name, commands[i]->help);
	fprintf(out, "\n'reghook COMMAND --help' describes one command; 'reghook --version' "
		     "prints the version.\n\n");
	config_print_help(out);
}

/*
 * Descriptors 0 to 2 open, on /dev/null if they were closed (`reghook ...
 * >&-`): else the database connection became descriptor 1, and what the
 * command printed went into it. A closed 1 gets an anonymous file instead,
 * so that whether the command printed anything (lost) can be told at the
 * end (cli_output_written).
 */
static void standard_descriptors(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		int null = fd == 1 ? memfd_create("reghook-closed-stdout", MFD_CLOEXEC) : -1;
		if (null < 0)
			null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null >= 0 && null != fd) {
			dup2(null, fd);
			close(null);
		}
		if (fd == 1)
			cli_stdout_was_closed();
	}
}

static int run(int argc, char **argv)
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
		if (strcmp(argv[1], commands[i]->name) == 0)
			return commands[i]->run(commands[i], argc - 1, argv + 1);
	char *shown = cli_printable(argv[1]);
	fprintf(stderr, "reghook: unknown command '%s' (try 'reghook --help')\n", shown);
	free(shown);
	return CLI_USAGE;
}

int main(int argc, char **argv)
{
	standard_descriptors();
	int rc = run(argc, argv);
	/* Output that did not reach its reader (a full disk, a closed pipe) is no success. */
	if (!cli_output_written() && rc == CLI_OK)
		rc = CLI_FAILED;
	return rc;
}
