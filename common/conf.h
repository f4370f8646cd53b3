/*
 * conf: table-driven configuration from a file, the environment and flags.
 *
 * A daemon describes its settings once, as a const table of conf_key rows
 * (name, type, default, bounds, help) pointing at fields of its own settings
 * struct. conf_load() fills that struct from the defaults, then a
 * `key = value` file, then PREFIX_KEY environment variables (or
 * PREFIX_KEY_FILE, naming a file that holds the value: a mounted secret), then
 * `--key value` flags, later sources winning; the same table prints --help.
 * Every error names the key and the reason, so a bad value stops start-up
 * with one line. A key marked `restart` is one the daemon reads only at
 * start; conf_same() and conf_copy() let a reload find such keys changed
 * and keep their running values.
 */
#ifndef REGHOOK_CONF_H
#define REGHOOK_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum conf_type {
	CONF_STRING,   /* char * (owned by the settings struct) */
	CONF_INT,      /* long long */
	CONF_BOOL,     /* bool */
	CONF_DURATION, /* long long, milliseconds; "500ms", "10s", "5m", "2h", "30d", bare = s */
	CONF_SIZE,     /* long long, bytes; "64KiB", "1MiB", "1G", bare = bytes */
};

/* When a change of the key takes effect in a running daemon. */
enum conf_apply {
	CONF_RELOADS, /* on reload */
	CONF_RESTART, /* read once at start: a reload that changes it keeps the running value */
};

struct conf_key {
	const char *name;
	enum conf_type type;
	const char *def;    /* default as text; NULL leaves the field unset */
	size_t offset;	    /* of the field in the settings struct */
	long long min, max; /* bounds for numeric types; both 0: none */
	/* Extra validation: returns NULL if value is fine, else the reason. */
	const char *(*check)(const char *value);
	const char *help;
	enum conf_apply apply;
};

/*
 * Opens path to read if it is a regular file: NULL otherwise, with why
 * saying why (not_regular for a file of another kind). A FIFO would hold
 * the reader until something wrote to it, and a pipe or a device cannot be
 * read the same a second time (the configuration on a reload, a
 * certificate that OpenSSL reads again after a check).
 */
FILE *conf_open_regular(const char *path, const char *not_regular, char *why, size_t whylen);
bool conf_parse_duration(const char *s, long long *ms) __attribute__((warn_unused_result));
bool conf_parse_size(const char *s, long long *bytes) __attribute__((warn_unused_result));
bool conf_parse_bool(const char *s, bool *out) __attribute__((warn_unused_result));

/* Sets one key from text. err receives "KEY: reason" on failure. */
bool conf_set(const struct conf_key *tab, size_t n, void *settings, const char *key,
	      const char *value, char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Fills settings from defaults, the file named by --config (or
 * PREFIX_CONFIG), the environment and flags. Consumes the flags it knows
 * from argv (compacting it and updating *argc); leaves the rest, in order,
 * for the caller. On failure err holds one line naming the key.
 */
bool conf_load(const struct conf_key *tab, size_t n, void *settings, const char *env_prefix,
	       int *argc, char **argv, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * conf_load for a reload: the file and the PREFIX_KEY_FILE files must be
 * regular files (a pipe given at start cannot be read the same again, and
 * a FIFO would block until written to).
 */
bool conf_load_again(const struct conf_key *tab, size_t n, void *settings, const char *env_prefix,
		     int *argc, char **argv, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * The value that key k alone would take from the sources conf_load reads
 * (argv is not changed), whatever is wrong with other keys: into its
 * field of settings, to be freed with conf_free(k, 1, settings). False
 * when its own value is bad, or the file cannot be read. For what must be
 * known when conf_load fails: how to report that failure.
 */
bool conf_peek(const struct conf_key *k, void *settings, const char *env_prefix, int argc,
	       char *const *argv) __attribute__((warn_unused_result));

/*
 * The environment variables conf_load does not read although they carry its
 * prefix (a misspelt PREFIX_LISTNE, a key in lower case), one per call, from
 * *at (0 at first) on: the next one's name goes to name, and to hint the
 * variable of the nearest key when one is near enough to be what was meant,
 * else "". False when there are no more.
 */
bool conf_next_unknown_env(const struct conf_key *tab, size_t n, const char *prefix, size_t *at,
			   char *name, size_t namelen, char *hint, size_t hintlen);

/* True if the key's field holds the same value in both settings structs. */
bool conf_same(const struct conf_key *k, const void *a, const void *b);
/* Copies the key's field from src to dst (a string is duplicated). */
void conf_copy(const struct conf_key *k, void *dst, const void *src);

const struct conf_key *conf_find(const struct conf_key *tab, size_t n, const char *name);
void conf_free(const struct conf_key *tab, size_t n, void *settings);
void conf_print_help(const struct conf_key *tab, size_t n, FILE *out);

#endif
