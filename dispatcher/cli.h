/*
 * cli: the command entry of the reghook binary and the helpers shared by
 * its subcommands. Each command's file (cmd_*.c, serve.c) exports one
 * const entry that carries its name, usage, help and options; main.c only
 * lists the entries. Every command but serve is a thin wrapper over SQL in
 * schema reghook, run over an ordinary blocking libpq connection (commands
 * run no event loop, so blocking is right there).
 */
#ifndef REGHOOK_CLI_H
#define REGHOOK_CLI_H

#include "config.h"

#include <libpq-fe.h>
#include <stdbool.h>

/* Exit codes of every command. */
enum {
	CLI_OK = 0,
	CLI_FAILED = 1, /* the command ran and failed: database error, not found, ... */
	CLI_USAGE = 2,	/* bad usage or configuration; nothing was done */
};

struct cli_command {
	const char *name;
	int (*run)(const struct cli_command *cmd, int argc, char **argv);
	const char *usage;	     /* after "reghook " */
	const char *help;	     /* one line */
	const char *details;	     /* options, printed by CMD --help; may be NULL */
	void (*print_options)(void); /* prints options from the command's own table; may be NULL */
	const char *flags; /* its options that take no value, space-separated; may be NULL */
};

/* Prints "reghook: <cmd>: reason" and the usage line, returns CLI_USAGE. */
int cli_usage_error(const struct cli_command *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * True (after printing help) if argv asks for it: --help anywhere, or -h
 * anywhere but as the value of an option (every --option takes one but the
 * command's flags), so `--password -h` sets the password "-h".
 */
bool cli_wants_help(const struct cli_command *cmd, int argc, char **argv);
void cli_print_command_help(const struct cli_command *cmd);

/*
 * Loads configuration for a command, which must name a database; false
 * after printing the reason (the caller exits CLI_USAGE).
 */
bool cli_config(const struct cli_command *cmd, struct config *cfg, int *argc, char **argv);
/* Connects (blocking); NULL after printing the reason. */
PGconn *cli_connect(const struct config *cfg);
/* Runs a parameterised query; NULL after printing the database's message. */
PGresult *cli_exec(PGconn *conn, const char *sql, int nparams, const char *const *params);
/*
 * Whether everything printed to stdout reached it (a full disk, a closed
 * pipe with SIGPIPE ignored); false after saying so on stderr. main()
 * asks at the end of every command, which then exits CLI_FAILED; a
 * command whose output is the only copy of something (a registry's token)
 * asks before it commits.
 */
bool cli_output_written(void);
/*
 * The same, and false too when the process began with stdout closed (its
 * output went to /dev/null): for what is shown once and kept nowhere else.
 */
bool cli_output_shown(void);
/* main(): stdout was closed at start, and is /dev/null now. */
void cli_stdout_was_closed(void);
/* BEGIN; false after printing why. */
bool cli_begin(PGconn *conn);

/*
 * Takes "--name value" or "--name=value" out of argv. Returns 1 if found
 * (*value borrowed from argv), 0 if absent, -1 if the value is missing.
 */
int cli_take_option(int *argc, char **argv, const char *name, const char **value);
/* Takes a flag without value ("--private") out of argv. */
bool cli_take_flag(int *argc, char **argv, const char *name);
/*
 * After a command took its options: false when nothing left in argv before
 * a "--" looks like an option (the "--" is taken out, so that what follows
 * it is positional: a role named -ci); else true, *rc being the usage
 * error said: the option given twice (the first was taken) or unknown.
 */
bool cli_leftover_options(const struct cli_command *cmd, int *argc, char **argv, int *rc);
/*
 * --since takes an age ("90s", "30m", "2h", "7d", "1w": a duration as in
 * the configuration) or anything PostgreSQL reads as a timestamptz
 * ("2026-11-22", "yesterday"). Writes the SQL-ready timestamptz text into
 * out; CLI_OK, or the exit code after printing why not.
 */
int cli_parse_since(const struct cli_command *cmd, PGconn *conn, const char *since, char *out,
		    size_t outlen) __attribute__((warn_unused_result));
/* Runs a statement; prints its result as a table if table is set. CLI_OK or CLI_FAILED. */
int cli_run(PGconn *conn, const char *sql, int nparams, const char *const *params, bool table);
/* An option of a command's own table: its flag, its value's name (NULL for a flag alone), help. */
struct cli_option {
	const char *flag;
	const char *arg;
	const char *help;
};
/*
 * Takes the table's options out of argv: values[i] is the value given
 * (borrowed from argv), "" for a flag alone, or NULL when absent. CLI_OK,
 * or CLI_USAGE after a message naming the option that lacks its value.
 */
int cli_take_options(const struct cli_command *cmd, const struct cli_option *opts, size_t n,
		     int *argc, char **argv, const char **values);
/* Prints the table as `CMD --help` shows it. */
void cli_print_options(const struct cli_option *opts, size_t n);
/* True for a positive decimal id (of a webhook, say) that fits in a bigint. */
bool cli_parse_id(const char *s);
/*
 * A value from the database as it may go to a terminal: a copy (to free)
 * with its control characters (C0, DEL, and C1 as UTF-8) and any byte that
 * is not well-formed UTF-8 each made '?' (text_printable), so
 * that text a person or an endpoint chose (a webhook's name, a callback's
 * description) cannot move the cursor, retitle the window or hide a line.
 */
char *cli_printable(const char *s) __attribute__((warn_unused_result));
/* Prints a result as an aligned table (or nothing but the header if empty). */
void cli_print_table(const PGresult *res);

/* The commands, each defined in its own file. */
extern const struct cli_command cmd_serve_entry;      /* serve.c */
extern const struct cli_command cmd_migrate_entry;    /* cmd_migrate.c */
extern const struct cli_command cmd_registry_entry;   /* cmd_registry.c */
extern const struct cli_command cmd_namespace_entry;  /* cmd_namespace.c */
extern const struct cli_command cmd_webhook_entry;    /* cmd_webhook.c */
extern const struct cli_command cmd_deliveries_entry; /* cmd_deliveries.c */
extern const struct cli_command cmd_retrigger_entry;  /* cmd_retrigger.c */

#endif
