/*
 * Unit tests for common/conf.c: the value parsers, conf_load's precedence
 * (defaults < file < environment < flags), that every error names its key
 * (and a file error its line), and that only the flags conf knows are
 * taken out of argv. A small settings table of its own stands in for the
 * daemon's; environment variables use the prefix RHUNIT_ so that nothing
 * in the caller's environment can leak in.
 */
#include "conf.h"
#include "unit.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PREFIX "RHUNIT_"

struct settings {
	char *listen;
	char *name;
	long long max_in_flight;
	bool verbose;
	long long timeout_ms;
	long long body_limit;
	char *mode;
};

static const char *check_mode(const char *v)
{
	return strcmp(v, "fast") == 0 || strcmp(v, "slow") == 0 ? NULL : "must be fast or slow";
}

#define F(field) offsetof(struct settings, field)
static const struct conf_key table[] = {
	{"listen", CONF_STRING, "127.0.0.1:8080", F(listen), 0, 0, NULL, "address to listen on",
	 CONF_RESTART},
	{"name", CONF_STRING, NULL, F(name), 0, 0, NULL, "a name, unset by default", CONF_RELOADS},
	{"max_in_flight", CONF_INT, "10", F(max_in_flight), 1, 1000, NULL, "deliveries at once",
	 CONF_RELOADS},
	{"verbose", CONF_BOOL, "false", F(verbose), 0, 0, NULL, "say more", CONF_RELOADS},
	{"request_timeout", CONF_DURATION, "10s", F(timeout_ms), 0, 0, NULL, "per request",
	 CONF_RELOADS},
	{"max_request_body", CONF_SIZE, "1MiB", F(body_limit), 0, 0, NULL, "largest body",
	 CONF_RELOADS},
	{"mode", CONF_STRING, "fast", F(mode), 0, 0, check_mode, "fast or slow", CONF_RELOADS},
};
#define N (sizeof(table) / sizeof(table[0]))

static const char *const env_vars[] = {PREFIX "CONFIG",
				       PREFIX "LISTEN",
				       PREFIX "NAME",
				       PREFIX "MAX_IN_FLIGHT",
				       PREFIX "VERBOSE",
				       PREFIX "REQUEST_TIMEOUT",
				       PREFIX "MAX_REQUEST_BODY",
				       PREFIX "MODE",
				       PREFIX "NAME_FILE",
				       PREFIX "LISTEN_FILE",
				       PREFIX "MAX_IN_FLIGHT_FILE"};

static void clear_env(void)
{
	for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
		unsetenv(env_vars[i]);
}

/* Writes text to a new temporary file; its path goes to path (caller unlinks). */
static bool temp_file(const char *text, char *path, size_t pathlen)
{
	const char *dir = getenv("TMPDIR");
	snprintf(path, pathlen, "%s/reghook-conf-XXXXXX", dir && *dir ? dir : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		return false;
	size_t len = strlen(text);
	bool ok = write(fd, text, len) == (ssize_t)len;
	close(fd);
	return ok;
}

/* conf_load over a NULL-terminated argument list; argc/argv are what it leaves. */
static bool load(struct settings *s, char **argv, int *argc, char *err, size_t errlen)
{
	*argc = 0;
	while (argv[*argc])
		(*argc)++;
	memset(s, 0, sizeof(*s));
	return conf_load(table, N, s, PREFIX, argc, argv, err, errlen);
}

UNIT_TEST(durations)
{
	static const struct {
		const char *text;
		long long ms;
	} good[] = {
		{"0", 0},	{"7", 7000},	 {"500ms", 500},	{"10s", 10000},
		{"5m", 300000}, {"2h", 7200000}, {"30d", 2592000000LL}, {"1w", 604800000LL},
		{"0ms", 0},
	};
	static const char *const bad[] = {"",
					  "s",
					  "10x",
					  "-5s",
					  "5 s",
					  "1.5s",
					  "10S",
					  " 10s",
					  "10s ",
					  "1h30m",
					  "99999999999999999999",
					  "9223372036854775807d"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		long long ms = -1;
		UNIT_CHECK(conf_parse_duration(good[i].text, &ms), "'%s' refused", good[i].text);
		UNIT_CHECK(ms == good[i].ms, "'%s' gave %lld, want %lld", good[i].text, ms,
			   good[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long long ms;
		UNIT_CHECK(!conf_parse_duration(bad[i], &ms), "'%s' accepted", bad[i]);
	}
}

UNIT_TEST(sizes)
{
	static const struct {
		const char *text;
		long long bytes;
	} good[] = {
		{"0", 0},
		{"65536", 65536},
		{"64KiB", 65536},
		{"64K", 65536},
		{"64KB", 65536},
		{"1MiB", 1048576},
		{"1M", 1048576},
		{"1 MiB", 1048576},
		{"2G", 2147483648LL},
		{"3GiB", 3221225472LL},
		{"100B", 100},
	};
	static const char *const bad[] = {"",	  "KiB",    "-1",    "1TiB",
					  "1kib", "1.5MiB", "1MiB ", "99999999999G"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		long long b = -1;
		UNIT_CHECK(conf_parse_size(good[i].text, &b), "'%s' refused", good[i].text);
		UNIT_CHECK(b == good[i].bytes, "'%s' gave %lld, want %lld", good[i].text, b,
			   good[i].bytes);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long long b;
		UNIT_CHECK(!conf_parse_size(bad[i], &b), "'%s' accepted", bad[i]);
	}
}

UNIT_TEST(bools)
{
	static const char *const yes[] = {"1", "true", "yes", "on", "TRUE", "On"};
	static const char *const no[] = {"0", "false", "no", "off", "False", "OFF"};
	static const char *const bad[] = {"", "2", "y", "enabled", "true ", "nope"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		bool b = false;
		UNIT_CHECK(conf_parse_bool(yes[i], &b) && b, "'%s' is not true", yes[i]);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		bool b = true;
		UNIT_CHECK(conf_parse_bool(no[i], &b) && !b, "'%s' is not false", no[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool b;
		UNIT_CHECK(!conf_parse_bool(bad[i], &b), "'%s' accepted", bad[i]);
	}
}

UNIT_TEST(defaults)
{
	struct settings s;
	char err[512] = "", *argv[] = {"prog", NULL};
	int argc;
	clear_env();
	UNIT_CHECK(load(&s, argv, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK_STR(s.listen, "127.0.0.1:8080");
	UNIT_CHECK(s.name == NULL, "name set without a default");
	UNIT_CHECK(s.max_in_flight == 10, "max_in_flight %lld", s.max_in_flight);
	UNIT_CHECK(!s.verbose, "verbose on");
	UNIT_CHECK(s.timeout_ms == 10000, "timeout %lld", s.timeout_ms);
	UNIT_CHECK(s.body_limit == 1048576, "body limit %lld", s.body_limit);
	UNIT_CHECK_STR(s.mode, "fast");
	UNIT_CHECK(argc == 1, "argc %d", argc);
	conf_free(table, N, &s);
	UNIT_CHECK(s.listen == NULL && s.mode == NULL, "conf_free left strings");
}

UNIT_TEST(precedence)
{
	struct settings s;
	char path[512], err[512] = "";
	clear_env();
	UNIT_CHECK(temp_file("# a comment\n"
			     "\n"
			     "  listen = 0.0.0.0:9000  \n"
			     "max_in_flight=20\n"
			     "request_timeout = 30s\n"
			     "mode = \"slow\"\n"
			     "name = from file\n",
			     path, sizeof(path)),
		   "cannot write a temporary file");
	setenv(PREFIX "MAX_IN_FLIGHT", "30", 1);
	setenv(PREFIX "REQUEST_TIMEOUT", "1m", 1);
	setenv(PREFIX "VERBOSE", "yes", 1);
	char *argv[] = {"prog", "--config", path, "--request-timeout", "2m", NULL};
	int argc;
	UNIT_CHECK(load(&s, argv, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK_STR(s.listen, "0.0.0.0:9000"); /* file over default */
	UNIT_CHECK_STR(s.name, "from file");	  /* inner spaces kept */
	UNIT_CHECK_STR(s.mode, "slow");		  /* quotes removed */
	UNIT_CHECK(s.max_in_flight == 30, "max_in_flight %lld, want 30 (env over file)",
		   s.max_in_flight);
	UNIT_CHECK(s.timeout_ms == 120000, "timeout %lld, want 120000 (flag over env)",
		   s.timeout_ms);
	UNIT_CHECK(s.verbose, "verbose from env not applied");
	UNIT_CHECK(s.body_limit == 1048576, "body limit %lld, want the default", s.body_limit);
	UNIT_CHECK(argc == 1 && argv[1] == NULL, "argc %d: --config and flags not consumed", argc);
	conf_free(table, N, &s);

	/* The file can also be named by PREFIX_CONFIG. */
	setenv(PREFIX "CONFIG", path, 1);
	char *argv2[] = {"prog", NULL};
	UNIT_CHECK(load(&s, argv2, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK_STR(s.listen, "0.0.0.0:9000");
	conf_free(table, N, &s);
	clear_env();
	unlink(path);
}

/* Loads with one bad source and checks the error mentions want. */
static void expect_error(char **argv, const char *want)
{
	struct settings s;
	char err[512] = "";
	int argc;
	UNIT_CHECK(!load(&s, argv, &argc, err, sizeof(err)), "loaded, want error '%s'", want);
	UNIT_CHECK(strstr(err, want), "error \"%s\", want \"%s\"", err, want);
	conf_free(table, N, &s);
}

/* Loads from a file holding text (and no other source) and checks the error mentions want. */
static void expect_file_error(const char *text, const char *want)
{
	char path[512], arg[600];
	UNIT_CHECK(temp_file(text, path, sizeof(path)), "cannot write a temporary file");
	snprintf(arg, sizeof(arg), "--config=%s", path);
	char *argv[] = {"prog", arg, NULL};
	expect_error(argv, want);
	unlink(path);
}

/* A line longer than any buffer is still one line: a '#' deep inside a long
 * value is part of the value, not the start of a comment on a second line. */
UNIT_TEST(long_lines)
{
	clear_env();
	static char text[20000];
	memset(text, 'a', sizeof(text));
	memcpy(text, "name = ", 7);
	text[8191] = '#';
	memcpy(text + sizeof(text) - 2, "\n", 2);
	char path[512], arg[600], err[256] = "";
	UNIT_CHECK(temp_file(text, path, sizeof(path)), "cannot write a temporary file");
	snprintf(arg, sizeof(arg), "--config=%s", path);
	char *argv[] = {"prog", arg, NULL};
	struct settings s;
	int argc;
	UNIT_CHECK(load(&s, argv, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK(s.name && strlen(s.name) == sizeof(text) - 9 && s.name[8191 - 7] == '#',
		   "value cut: %zu bytes", s.name ? strlen(s.name) : 0);
	conf_free(table, N, &s);

	/* A NUL byte would hide the rest of its line: refused. */
	FILE *f = fopen(path, "wb");
	UNIT_CHECK(f && fwrite("listen = x\nname = a\0b\n", 1, 22, f) == 22, "cannot write");
	if (f)
		fclose(f);
	char *again[] = {"prog", arg, NULL}; /* load() consumed the first */
	UNIT_CHECK(!load(&s, again, &argc, err, sizeof(err)) && strstr(err, ":2: NUL byte"), "%s",
		   err);
	conf_free(table, N, &s);
	unlink(path);
}

/* A value out of range is told the bounds, written as durations and sizes are written. */
UNIT_TEST(range_errors_say_the_bounds)
{
	struct bounded {
		long long timeout_ms, body;
	} b = {0};
	static const struct conf_key bounded_table[] = {
		{"timeout", CONF_DURATION, NULL, offsetof(struct bounded, timeout_ms), 1, 86400000,
		 NULL, "", CONF_RELOADS},
		{"body", CONF_SIZE, NULL, offsetof(struct bounded, body), 1024, 1LL << 30, NULL, "",
		 CONF_RELOADS},
	};
	char err[256];
	UNIT_CHECK(!conf_set(bounded_table, 2, &b, "timeout", "99d", err, sizeof(err)), "99d set");
	UNIT_CHECK(strcmp(err, "timeout: out of range: from 1ms to 1d: '99d'") == 0, "%s", err);
	UNIT_CHECK(!conf_set(bounded_table, 2, &b, "body", "2G", err, sizeof(err)), "2G set");
	UNIT_CHECK(strcmp(err, "body: out of range: from 1KiB to 1GiB: '2G'") == 0, "%s", err);
	UNIT_CHECK(conf_set(bounded_table, 2, &b, "timeout", "24h", err, sizeof(err)) &&
			   b.timeout_ms == 86400000,
		   "24h: %s", err);
}

UNIT_TEST(errors_name_the_key)
{
	clear_env();
	expect_file_error(
		"listen = x\n\nrequest_timeout = soon\n",
		":3: request_timeout: not a duration (e.g. 500ms, 10s, 5m, 2h, 30d): 'soon'");
	expect_file_error("listen = x\ncolour = blue\n", ":2: colour: unknown configuration key");
	expect_file_error("listne = x\n",
			  ":1: listne: unknown configuration key (did you mean listen?)");
	expect_file_error("Max-In-Fligth = 3\n", "(did you mean max_in_flight?)");
	expect_file_error("listen x\n", ":1: expected 'key = value'");

	char *a1[] = {"prog", "--config", "/nonexistent/reghook.conf", NULL};
	expect_error(a1, "config: cannot read /nonexistent/reghook.conf");
	char *a2[] = {"prog", "--config", NULL};
	expect_error(a2, "--config: needs a file");
	/* A directory (a bind mount of a missing file), an empty --config=$UNSET. */
	char *a2d[] = {"prog", "--config", "/", NULL};
	expect_error(a2d, "config: cannot read /: Is a directory");
	char *a2e[] = {"prog", "--config=", NULL};
	expect_error(a2e, "--config: needs a file");
	char *a2f[] = {"prog", "--config", "", NULL};
	expect_error(a2f, "--config: needs a file");

	setenv(PREFIX "MAX_IN_FLIGHT", "lots", 1);
	char *a3[] = {"prog", NULL};
	expect_error(a3, "max_in_flight: not an integer: 'lots'");
	clear_env();

	char *a4[] = {"prog", "--max-in-flight", "0", NULL};
	expect_error(a4, "max_in_flight: out of range: from 1 to 1000: '0'");
	char *a5[] = {"prog", "--max_in_flight=1001", NULL};
	expect_error(a5, "max_in_flight: out of range: from 1 to 1000: '1001'");
	char *a6[] = {"prog", "--mode", "medium", NULL};
	expect_error(a6, "mode: must be fast or slow: 'medium'");
	char *a7[] = {"prog", "--listen", NULL};
	expect_error(a7, "listen: missing value for --listen");
	char *a8[] = {"prog", "--verbose=maybe", NULL};
	expect_error(a8, "verbose: not a boolean");
	char *a9[] = {"prog", "--max-request-body", "lots", NULL};
	expect_error(a9, "max_request_body: not a size");

	struct settings s = {0};
	char err[256];
	UNIT_CHECK(!conf_set(table, N, &s, "colour", "blue", err, sizeof(err)), "conf_set colour");
	UNIT_CHECK_STR(err, "colour: unknown configuration key");
	UNIT_CHECK(conf_set(table, N, &s, "max-in-flight", "5", err, sizeof(err)), "%s", err);
	UNIT_CHECK(s.max_in_flight == 5, "conf_set max-in-flight gave %lld", s.max_in_flight);
}

/* Variables with the prefix that conf_load does not read, each once, with
 * the key meant when one is near. */
UNIT_TEST(unknown_environment_variables)
{
	clear_env();
	static const char *const vars[] = {PREFIX "LISTNE", PREFIX "max_in_flight",
					   PREFIX "NAM_FILE", PREFIX "SOMETHING_ELSE",
					   PREFIX "MODE_FILE_FILE"};
	setenv(PREFIX "LISTEN", "x", 1);
	setenv(PREFIX "NAME_FILE", "", 1);
	setenv(PREFIX "CONFIG", "", 1);
	setenv(PREFIX "LISTNE", "x", 1);
	setenv(PREFIX "max_in_flight", "3", 1);
	setenv(PREFIX "NAM_FILE", "/x", 1);
	setenv(PREFIX "SOMETHING_ELSE", "x", 1);
	setenv(PREFIX "MODE_FILE_FILE", "x", 1);
	setenv("RHUNITLISTEN", "x", 1);
	const char *want[][2] = {{PREFIX "LISTNE", PREFIX "LISTEN"},
				 {PREFIX "max_in_flight", PREFIX "MAX_IN_FLIGHT"},
				 {PREFIX "NAM_FILE", PREFIX "NAME_FILE"},
				 {PREFIX "SOMETHING_ELSE", ""},
				 {PREFIX "MODE_FILE_FILE", ""}};
	int found[5] = {0}, others = 0;
	char name[128], hint[128];
	for (size_t at = 0; conf_next_unknown_env(table, N, PREFIX, &at, name, sizeof(name), hint,
						  sizeof(hint));) {
		int k = -1;
		for (int i = 0; i < 5; i++)
			if (strcmp(name, want[i][0]) == 0)
				k = i;
		if (k < 0) {
			others++;
			UNIT_CHECK(false, "%s reported", name);
			continue;
		}
		found[k]++;
		UNIT_CHECK(strcmp(hint, want[k][1]) == 0, "%s: hint %s, want %s", name, hint,
			   want[k][1]);
	}
	for (int i = 0; i < 5; i++)
		UNIT_CHECK(found[i] == 1, "%s reported %d times", want[i][0], found[i]);
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	unsetenv("RHUNITLISTEN");
	clear_env();
	UNIT_CHECK(others == 0, "%d others", others);
}

/* A byte order mark before the first key (Notepad's UTF-8) is not part of it. */
UNIT_TEST(byte_order_mark)
{
	clear_env();
	char path[512], arg[600], err[512] = "";
	UNIT_CHECK(temp_file("\xef\xbb\xbflisten = 10.0.0.1:9\n", path, sizeof(path)), "temp");
	snprintf(arg, sizeof(arg), "--config=%s", path);
	char *argv[] = {"prog", arg, NULL};
	struct settings s;
	int argc;
	UNIT_CHECK(load(&s, argv, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK(s.listen && strcmp(s.listen, "10.0.0.1:9") == 0, "listen %s", s.listen);
	conf_free(table, N, &s);
	unlink(path);
}

UNIT_TEST(flags_consumed_others_kept)
{
	struct settings s;
	char err[512] = "";
	int argc;
	clear_env();
	char *argv[] = {"reghook",   "webhook",	  "add",      "--listen", "0.0.0.0:9",
			"team-a",    "--verbose", "--method", "GET",	  "--max-in-flight=7",
			"https://x", "--",	  "--listen", "after",	  NULL};
	UNIT_CHECK(load(&s, argv, &argc, err, sizeof(err)), "%s", err);
	static const char *const want[] = {"reghook", "webhook",   "add", "team-a",   "--method",
					   "GET",     "https://x", "--",  "--listen", "after"};
	int n = (int)(sizeof(want) / sizeof(want[0]));
	UNIT_CHECK(argc == n, "argc %d, want %d", argc, n);
	for (int i = 0; i < n && i < argc; i++)
		UNIT_CHECK_STR(argv[i], want[i]);
	UNIT_CHECK(argv[argc] == NULL, "argv[argc] is not NULL");
	UNIT_CHECK_STR(s.listen, "0.0.0.0:9"); /* not "after": '--' ends the flags */
	UNIT_CHECK(s.verbose, "--verbose before another flag is true");
	UNIT_CHECK(s.max_in_flight == 7, "max_in_flight %lld", s.max_in_flight);
	conf_free(table, N, &s);

	char *argv2[] = {"prog", "--verbose=off", "--verbose", "true", NULL};
	UNIT_CHECK(load(&s, argv2, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK(s.verbose && argc == 1, "the last --verbose wins and both are consumed");
	conf_free(table, N, &s);
}

UNIT_TEST(find_and_help)
{
	UNIT_CHECK(conf_find(table, N, "max_in_flight") == &table[2], "max_in_flight");
	UNIT_CHECK(conf_find(table, N, "MAX-IN-FLIGHT") == &table[2], "MAX-IN-FLIGHT");
	UNIT_CHECK(conf_find(table, N, "max_in") == NULL, "a prefix matched");
	UNIT_CHECK(conf_find(table, N, "max_in_flight_x") == NULL, "a longer name matched");

	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	UNIT_CHECK(f, "open_memstream");
	if (!f)
		return;
	conf_print_help(table, N, f);
	fclose(f);
	UNIT_CHECK(strstr(text, "--listen") && strstr(text, "address to listen on (default "
							    "127.0.0.1:8080)"),
		   "help lacks listen: %s", text);
	UNIT_CHECK(strstr(text, "--request_timeout") && strstr(text, "(default 10s)"),
		   "help lacks request_timeout");
	UNIT_CHECK(strstr(text, "a name, unset by default\n"), "a key without default");
	UNIT_CHECK(strstr(text, "(default 127.0.0.1:8080) [restart to change]\n"),
		   "a restart-only key is not marked: %s", text);
	UNIT_CHECK(strstr(text, "deliveries at once (default 10)\n"), "a reloadable key is marked");
	free(text);
}

/* What a reload uses to find changed keys and keep the running value of restart-only ones. */
UNIT_TEST(same_and_copy)
{
	struct settings a = {0}, b = {0};
	char err[256];
	for (size_t i = 0; i < N; i++) {
		if (table[i].def) {
			UNIT_CHECK(conf_set(table, N, &a, table[i].name, table[i].def, err,
					    sizeof(err)),
				   "%s", err);
			UNIT_CHECK(conf_set(table, N, &b, table[i].name, table[i].def, err,
					    sizeof(err)),
				   "%s", err);
		}
	}
	for (size_t i = 0; i < N; i++)
		UNIT_CHECK(conf_same(&table[i], &a, &b), "%s differs", table[i].name);
	UNIT_CHECK(conf_set(table, N, &b, "listen", "127.0.0.1:9", err, sizeof(err)), "%s", err);
	UNIT_CHECK(conf_set(table, N, &b, "verbose", "on", err, sizeof(err)), "%s", err);
	UNIT_CHECK(conf_set(table, N, &b, "request_timeout", "2s", err, sizeof(err)), "%s", err);
	UNIT_CHECK(conf_set(table, N, &b, "name", "x", err, sizeof(err)), "%s", err);
	for (size_t i = 0; i < N; i++) {
		bool changed = strcmp(table[i].name, "listen") == 0 ||
			       strcmp(table[i].name, "verbose") == 0 ||
			       strcmp(table[i].name, "request_timeout") == 0 ||
			       strcmp(table[i].name, "name") == 0;
		UNIT_CHECK(conf_same(&table[i], &a, &b) == !changed, "%s", table[i].name);
		conf_copy(&table[i], &b, &a);
		UNIT_CHECK(conf_same(&table[i], &a, &b), "%s not copied", table[i].name);
	}
	UNIT_CHECK(b.name == NULL && strcmp(b.listen, "127.0.0.1:8080") == 0 &&
			   b.listen != a.listen,
		   "strings are duplicated, NULL stays NULL");
	conf_free(table, N, &a);
	conf_free(table, N, &b);
}

/* PREFIX_KEY_FILE: the value is the file's text less its trailing line
 * ends (a secret written with echo ends with one); it ranks as PREFIX_KEY. */
UNIT_TEST(value_from_file)
{
	struct settings s;
	char name_path[512], listen_path[512], conf_path[512], lots_path[512], err[512] = "";
	int argc;
	clear_env();
	UNIT_CHECK(temp_file("postgresql://u:p w@db/x?a=b\r\n\n", name_path, sizeof(name_path)) &&
			   temp_file("0.0.0.0:8080", listen_path, sizeof(listen_path)) &&
			   temp_file("name = from config\nlisten = 127.0.0.1:1\n", conf_path,
				     sizeof(conf_path)),
		   "cannot write a temporary file");
	setenv(PREFIX "CONFIG", conf_path, 1);
	setenv(PREFIX "NAME_FILE", name_path, 1);
	setenv(PREFIX "LISTEN_FILE", listen_path, 1);
	char *argv[] = {"prog", NULL};
	UNIT_CHECK(load(&s, argv, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK_STR(s.name, "postgresql://u:p w@db/x?a=b"); /* over the file, line ends cut */
	UNIT_CHECK_STR(s.listen, "0.0.0.0:8080");	       /* no line end at all */
	conf_free(table, N, &s);

	/* A flag still wins; an empty _FILE variable counts as unset. */
	setenv(PREFIX "LISTEN_FILE", "", 1);
	char *argv2[] = {"prog", "--name", "from flag", NULL};
	UNIT_CHECK(load(&s, argv2, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK_STR(s.name, "from flag");
	UNIT_CHECK_STR(s.listen, "127.0.0.1:1");
	conf_free(table, N, &s);

	/* A value from a file is checked as any other. */
	UNIT_CHECK(temp_file("lots\n", lots_path, sizeof(lots_path)), "temporary file");
	setenv(PREFIX "MAX_IN_FLIGHT_FILE", lots_path, 1);
	char *argv3[] = {"prog", NULL};
	expect_error(argv3, "max_in_flight: not an integer: 'lots'");
	clear_env();
	unlink(name_path);
	unlink(listen_path);
	unlink(conf_path);
	unlink(lots_path);
}

/* Loads with PREFIX_NAME_FILE naming a file that holds len bytes of text
 * (or, with text NULL, a path that does not exist) and checks the error. */
static void expect_value_file_error(const char *text, size_t len, const char *want)
{
	char path[512] = "/nonexistent/secret";
	if (text) {
		UNIT_CHECK(temp_file("", path, sizeof(path)), "cannot write a temporary file");
		FILE *f = fopen(path, "w");
		UNIT_CHECK(f && fwrite(text, 1, len, f) == len && fclose(f) == 0, "cannot write %s",
			   path);
	}
	setenv(PREFIX "NAME_FILE", path, 1);
	char *argv[] = {"prog", NULL};
	expect_error(argv, want);
	unsetenv(PREFIX "NAME_FILE");
	if (text)
		unlink(path);
}

UNIT_TEST(value_file_errors)
{
	clear_env();
	expect_value_file_error(NULL, 0,
				"name: " PREFIX
				"NAME_FILE: cannot read /nonexistent/secret: No such "
				"file or directory");
	expect_value_file_error("db\0url\n", 7, "name: " PREFIX "NAME_FILE: ");
	expect_value_file_error("db\0url\n", 7, ": NUL byte in the file");
	static char big[65537];
	memset(big, 'x', sizeof(big));
	expect_value_file_error(big, sizeof(big), ": larger than 64 KiB");
	/* 64 KiB exactly is a value. */
	struct settings s;
	char path[512], err[512] = "";
	int argc;
	UNIT_CHECK(temp_file("", path, sizeof(path)), "cannot write a temporary file");
	FILE *f = fopen(path, "w");
	UNIT_CHECK(f && fwrite(big, 1, 65536, f) == 65536 && fclose(f) == 0, "cannot write");
	setenv(PREFIX "NAME_FILE", path, 1);
	char *argv[] = {"prog", NULL};
	UNIT_CHECK(load(&s, argv, &argc, err, sizeof(err)), "%s", err);
	UNIT_CHECK(s.name && strlen(s.name) == 65536, "64 KiB value cut");
	conf_free(table, N, &s);
	/* A directory is not a value. */
	setenv(PREFIX "NAME_FILE", "/", 1);
	expect_error(argv, "name: " PREFIX "NAME_FILE: /: Is a directory");
	/* Both the variable and the file: which one was meant? */
	setenv(PREFIX "NAME_FILE", path, 1);
	setenv(PREFIX "NAME", "direct", 1);
	expect_error(argv, "name: both " PREFIX "NAME and " PREFIX "NAME_FILE are set");
	clear_env();
	unlink(path);
}

/* One key's value, looked for past faults in the others, from every source in order. */
UNIT_TEST(peek_one_key)
{
	clear_env();
	const struct conf_key *mode = conf_find(table, N, "mode");
	char path[256];
	UNIT_CHECK(
		temp_file("bogus_key = 1\nmax_in_flight = many\nmode = slow\n", path, sizeof(path)),
		"cannot write the file");
	char *argv[] = {"prog", "--config", path, "--listen", "--max-in-flight", "x", NULL};
	struct settings s = {0};
	UNIT_CHECK(conf_peek(mode, &s, PREFIX, 6, argv), "the file's mode not found");
	UNIT_CHECK(s.mode && strcmp(s.mode, "slow") == 0, "mode %s", s.mode ? s.mode : "NULL");
	conf_free(mode, 1, &s);
	/* argv is left as it was. */
	UNIT_CHECK(strcmp(argv[1], "--config") == 0 && argv[6] == NULL, "argv changed");
	/* The environment over the file, a flag over both. */
	setenv(PREFIX "MODE", "fast", 1);
	UNIT_CHECK(conf_peek(mode, &s, PREFIX, 6, argv) && strcmp(s.mode, "fast") == 0,
		   "the environment's mode not taken");
	conf_free(mode, 1, &s);
	char *flagged[] = {"prog", "--config", path, "--mode=slow", NULL};
	UNIT_CHECK(conf_peek(mode, &s, PREFIX, 4, flagged) && strcmp(s.mode, "slow") == 0,
		   "the flag's mode not taken");
	conf_free(mode, 1, &s);
	/* Its own value bad: false. */
	setenv(PREFIX "MODE", "medium", 1);
	UNIT_CHECK(!conf_peek(mode, &s, PREFIX, 6, argv), "a bad mode taken");
	conf_free(mode, 1, &s);
	clear_env();
	/* Nothing set: its default. */
	char *bare[] = {"prog", NULL};
	UNIT_CHECK(conf_peek(mode, &s, PREFIX, 1, bare) && strcmp(s.mode, "fast") == 0,
		   "the default not taken");
	conf_free(mode, 1, &s);
	unlink(path);
	/* A file that cannot be read: false. */
	UNIT_CHECK(!conf_peek(mode, &s, PREFIX, 3, argv), "a missing file read");
	conf_free(mode, 1, &s);
}

int main(void)
{
	UNIT_RUN(durations);
	UNIT_RUN(sizes);
	UNIT_RUN(bools);
	UNIT_RUN(defaults);
	UNIT_RUN(precedence);
	UNIT_RUN(long_lines);
	UNIT_RUN(errors_name_the_key);
	UNIT_RUN(unknown_environment_variables);
	UNIT_RUN(byte_order_mark);
	UNIT_RUN(flags_consumed_others_kept);
	UNIT_RUN(find_and_help);
	UNIT_RUN(range_errors_say_the_bounds);
	UNIT_RUN(same_and_copy);
	UNIT_RUN(value_from_file);
	UNIT_RUN(value_file_errors);
	UNIT_RUN(peek_one_key);
	return UNIT_DONE();
}
