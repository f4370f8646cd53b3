/*
 * conf: see conf.h.
 */
#include "conf.h"
#include "buf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Parses a non-negative decimal prefix; returns the rest of s or NULL. */
static const char *parse_number(const char *s, long long *out)
{
	if (!isdigit((unsigned char)*s))
		return NULL;
	errno = 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	if (errno == ERANGE)
		return NULL;
	*out = v;
	return end;
}

static bool scale(long long v, long long unit, long long *out)
{
	if (v > LLONG_MAX / unit)
		return false;
	*out = v * unit;
	return true;
}

bool conf_parse_duration(const char *s, long long *ms)
{
	static const struct {
		const char *suffix;
		long long ms;
	} units[] = {{"", 1000},     {"ms", 1},	      {"s", 1000},	 {"m", 60000},
		     {"h", 3600000}, {"d", 86400000}, {"w", 604800000LL}};
	long long v;
	const char *rest = parse_number(s, &v);
	if (!rest)
		return false;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(rest, units[i].suffix) == 0)
			return scale(v, units[i].ms, ms);
	return false;
}

bool conf_parse_size(const char *s, long long *bytes)
{
	static const struct {
		const char *suffix;
		long long bytes;
	} units[] = {{"", 1},
		     {"B", 1},
		     {"K", 1024},
		     {"KiB", 1024},
		     {"KB", 1024},
		     {"M", 1048576},
		     {"MiB", 1048576},
		     {"MB", 1048576},
		     {"G", 1073741824LL},
		     {"GiB", 1073741824LL},
		     {"GB", 1073741824LL}};
	long long v;
	const char *rest = parse_number(s, &v);
	if (!rest)
		return false;
	while (*rest == ' ')
		rest++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(rest, units[i].suffix) == 0)
			return scale(v, units[i].bytes, bytes);
	return false;
}

bool conf_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/* Keys are written with '_' but accepted with '-' (flags) and any case (env). */
static bool key_equal(const char *name, const char *key, size_t keylen)
{
	size_t i = 0;
	for (; i < keylen && name[i]; i++) {
		char c = (char)tolower((unsigned char)key[i]);
		if (c == '-')
			c = '_';
		if (c != name[i])
			return false;
	}
	return i == keylen && name[i] == '\0';
}

static const struct conf_key *find_key(const struct conf_key *tab, size_t n, const char *key,
				       size_t keylen)
{
	for (size_t i = 0; i < n; i++)
		if (key_equal(tab[i].name, key, keylen))
			return &tab[i];
	return NULL;
}

/* Edit distance of a name (any case, '-' for '_', as keys are matched) from
 * a key's: a typo is one or two edits. */
static size_t distance(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b), row[64];
	if (alen >= 64 || blen >= 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= blen; j++)
		row[j] = j;
	for (size_t i = 1; i <= alen; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= blen; j++) {
			size_t up = row[j];
			char c = (char)tolower((unsigned char)a[i - 1]);
			size_t sub = diag + ((c == '-' ? '_' : c) != b[j - 1]);
			size_t best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
			row[j] = sub < best ? sub : best;
			diag = up;
		}
	}
	return row[blen];
}

/* The one key nearest to a name that is none (at most two edits), or NULL. */
static const struct conf_key *nearest_key(const struct conf_key *tab, size_t n, const char *name,
					  size_t len)
{
	const struct conf_key *best = NULL;
	size_t best_d = 3;
	bool tie = false;
	for (size_t i = 0; i < n; i++) {
		size_t d = distance(name, len, tab[i].name);
		if (d < best_d) {
			best = &tab[i], best_d = d, tie = false;
		} else if (d == best_d) {
			tie = true;
		}
	}
	return tie ? NULL : best;
}

const struct conf_key *conf_find(const struct conf_key *tab, size_t n, const char *name)
{
	return find_key(tab, n, name, strlen(name));
}

/* A bound as a person writes it: 86400000 ms is "1d", 1048576 bytes "1MiB". */
static void format_value(enum conf_type type, long long v, char *out, size_t outlen)
{
	static const struct {
		const char *suffix;
		long long unit;
	} durations[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}},
	  sizes[] = {{"GiB", 1073741824LL}, {"MiB", 1048576}, {"KiB", 1024}, {"", 1}};
	const bool dur = type == CONF_DURATION;
	const size_t n =
		dur ? sizeof(durations) / sizeof(durations[0]) : sizeof(sizes) / sizeof(sizes[0]);
	if (type == CONF_DURATION || type == CONF_SIZE) {
		for (size_t i = 0; i < n; i++) {
			long long unit = dur ? durations[i].unit : sizes[i].unit;
			if (v != 0 && v % unit == 0) {
				snprintf(out, outlen, "%lld%s", v / unit,
					 dur ? durations[i].suffix : sizes[i].suffix);
				return;
			}
		}
	}
	snprintf(out, outlen, "%lld", v);
}

static bool set_key(const struct conf_key *k, void *settings, const char *value, char *err,
		    size_t errlen)
{
	char *field = (char *)settings + k->offset;
	long long v = 0;
	bool b;
	const char *why = NULL;

	switch (k->type) {
	case CONF_STRING:
		break;
	case CONF_INT: {
		char *end;
		errno = 0;
		v = strtoll(value, &end, 10);
		if (*value == '\0' || *end != '\0' || errno == ERANGE)
			why = "not an integer";
		break;
	}
	case CONF_BOOL:
		if (!conf_parse_bool(value, &b))
			why = "not a boolean (true/false, on/off, yes/no, 1/0)";
		break;
	case CONF_DURATION:
		if (!conf_parse_duration(value, &v))
			why = "not a duration (e.g. 500ms, 10s, 5m, 2h, 30d)";
		break;
	case CONF_SIZE:
		if (!conf_parse_size(value, &v))
			why = "not a size (e.g. 65536, 64KiB, 1MiB)";
		break;
	}
	char range[96];
	if (!why && k->type != CONF_STRING && k->type != CONF_BOOL && (k->min || k->max) &&
	    (v < k->min || v > k->max)) {
		char lo[32], hi[32];
		format_value(k->type, k->min, lo, sizeof(lo));
		format_value(k->type, k->max, hi, sizeof(hi));
		snprintf(range, sizeof(range), "out of range: from %s to %s", lo, hi);
		why = range;
	}
	if (!why && k->check)
		why = k->check(value);
	if (why) {
		/* Quoted printable: a control character or a stray byte goes to a terminal. */
		char shown[256];
		snprintf(shown, sizeof(shown), "%s", value);
		text_printable(shown);
		snprintf(err, errlen, "%s: %s: '%s'", k->name, why, shown);
		return false;
	}
	switch (k->type) {
	case CONF_STRING:
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		break;
	case CONF_BOOL:
		*(bool *)field = b;
		break;
	default:
		*(long long *)field = v;
	}
	return true;
}

bool conf_set(const struct conf_key *tab, size_t n, void *settings, const char *key,
	      const char *value, char *err, size_t errlen)
{
	const struct conf_key *k = conf_find(tab, n, key);
	if (!k) {
		snprintf(err, errlen, "%s: unknown configuration key", key);
		return false;
	}
	return set_key(k, settings, value, err, errlen);
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* How load_all reads its sources. */
enum {
	LOAD_LENIENT = 1, /* a line of the file not setting a key of tab is passed over */
	LOAD_AGAIN = 2,	  /* a reload: files must be regular files (open_source) */
};

FILE *conf_open_regular(const char *path, const char *not_regular, char *why, size_t whylen)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return NULL;
	}
	struct stat st;
	FILE *f = NULL;
	if (fstat(fd, &st) != 0)
		snprintf(why, whylen, "%s", strerror(errno));
	else if (!S_ISREG(st.st_mode))
		snprintf(why, whylen, "%s", not_regular);
	else if (!(f = fdopen(fd, "r")))
		snprintf(why, whylen, "%s", strerror(errno));
	if (!f)
		close(fd);
	return f;
}

/*
 * Opens path to read, or says why not in why. Read again (LOAD_AGAIN),
 * only a regular file is: a pipe or a device was read at start and cannot
 * be read the same again (a pipe reads as empty: every key back to its
 * default).
 */
static FILE *open_source(const char *path, int how, char *why, size_t whylen)
{
	if (how & LOAD_AGAIN)
		return conf_open_regular(
			path,
			"not a regular file, which is read once, at start: restart "
			"reghook to read it again",
			why, whylen);
	FILE *f = fopen(path, "r");
	if (!f)
		snprintf(why, whylen, "%s", strerror(errno));
	return f;
}

/* how: LOAD_LENIENT, LOAD_AGAIN. */
static bool load_file(const struct conf_key *tab, size_t n, void *settings, const char *path,
		      int how, char *err, size_t errlen)
{
	char why[512];
	FILE *f = open_source(path, how, why, sizeof(why));
	if (!f) {
		snprintf(err, errlen, "config: cannot read %s: %s", path, why);
		return false;
	}
	/* getline, not a fixed buffer: a long line is one line, never two. */
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	int lineno = 0;
	bool ok = true;
	while (ok && (got = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (memchr(line, '\0', (size_t)got) && (how & LOAD_LENIENT))
			continue;
		if (memchr(line, '\0', (size_t)got)) {
			snprintf(err, errlen, "%s:%d: NUL byte in the line", path, lineno);
			ok = false;
			break;
		}
		/* A byte order mark, as some editors write, is not part of the key. */
		char *s = trim(lineno == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0 ? line + 3
										    : line);
		if (*s == '\0' || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq && (how & LOAD_LENIENT))
			continue;
		if (!eq) {
			snprintf(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
			ok = false;
			break;
		}
		*eq = '\0';
		char *key = trim(s), *value = trim(eq + 1);
		size_t vl = strlen(value);
		if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
			value[vl - 1] = '\0';
			value++;
		}
		const struct conf_key *k = find_key(tab, n, key, strlen(key));
		if (!k && (how & LOAD_LENIENT))
			continue;
		if (!k) {
			const struct conf_key *near = nearest_key(tab, n, key, strlen(key));
			snprintf(err, errlen, "%s:%d: %s: unknown configuration key%s%s%s", path,
				 lineno, key, near ? " (did you mean " : "", near ? near->name : "",
				 near ? "?)" : "");
			ok = false;
		} else if (!set_key(k, settings, value, why, sizeof(why))) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
			ok = false;
		}
	}
	/* A directory (a bind mount of a file that was not there), a read
	 * error or no memory for a long line ends getline as the end of the
	 * file would: not as an empty or shortened configuration. */
	if (ok && (ferror(f) || !feof(f))) {
		snprintf(err, errlen, "config: cannot read %s: %s", path, strerror(errno));
		ok = false;
	}
	free(line);
	fclose(f);
	return ok;
}

/* The largest file PREFIX_KEY_FILE may name: a value, not a document. */
#define CONF_VALUE_FILE_MAX 65536

/*
 * Reads the value of key k from the file that the environment variable var
 * names (a secret mounted by a container runtime): the whole file, less its
 * trailing line ends. Returns it (owned by the caller), or NULL with err set.
 */
static char *read_value_file(const struct conf_key *k, const char *var, const char *path, int how,
			     char *err, size_t errlen)
{
	char cannot[256];
	FILE *f = open_source(path, how, cannot, sizeof(cannot));
	if (!f) {
		snprintf(err, errlen, "%s: %s: cannot read %s: %s", k->name, var, path, cannot);
		return NULL;
	}
	char *text = xmalloc(CONF_VALUE_FILE_MAX + 1);
	size_t len = fread(text, 1, CONF_VALUE_FILE_MAX + 1, f);
	const char *why = NULL;
	if (ferror(f))
		why = strerror(errno); /* a directory: "Is a directory" */
	else if (len > CONF_VALUE_FILE_MAX)
		why = "larger than 64 KiB";
	else if (memchr(text, '\0', len))
		why = "NUL byte in the file";
	fclose(f);
	if (why) {
		snprintf(err, errlen, "%s: %s: %s: %s", k->name, var, path, why);
		free(text);
		return NULL;
	}
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	text[len] = '\0';
	/* A byte order mark, as some editors write, is not part of the value (nor of the file's
	 * keys). */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		memmove(text, text + 3, len - 2);
	return text;
}

/*
 * PREFIX_KEY sets a key; PREFIX_KEY_FILE names a file holding its value
 * instead (compose and Kubernetes mount secrets as files). Both at once is
 * an error, as the two could disagree; an empty PREFIX_KEY_FILE is unset.
 */
static bool load_env(const struct conf_key *tab, size_t n, void *settings, const char *prefix,
		     int how, char *err, size_t errlen)
{
	char var[256], file_var[262];
	for (size_t i = 0; i < n; i++) {
		snprintf(var, sizeof(var), "%s%s", prefix, tab[i].name);
		for (char *p = var; *p; p++)
			*p = (char)toupper((unsigned char)*p);
		snprintf(file_var, sizeof(file_var), "%s_FILE", var);
		const char *v = getenv(var), *path = getenv(file_var);
		if (path && !*path)
			path = NULL; /* set but empty, as PREFIX_CONFIG: not set */
		if (v && path) {
			snprintf(err, errlen, "%s: both %s and %s are set", tab[i].name, var,
				 file_var);
			return false;
		}
		if (path) {
			char *text = read_value_file(&tab[i], file_var, path, how, err, errlen);
			bool ok = text && set_key(&tab[i], settings, text, err, errlen);
			free(text);
			if (!ok)
				return false;
		} else if (v && !set_key(&tab[i], settings, v, err, errlen)) {
			return false;
		}
	}
	return true;
}

/* Whether the environment variable name (after the prefix, len bytes) is
 * that of key k: its name in capitals. */
static bool env_names(const struct conf_key *k, const char *name, size_t len)
{
	size_t i = 0;
	for (; i < len && k->name[i]; i++)
		if (name[i] != toupper((unsigned char)k->name[i]))
			return false;
	return i == len && k->name[i] == '\0';
}

extern char **environ;

bool conf_next_unknown_env(const struct conf_key *tab, size_t n, const char *prefix, size_t *at,
			   char *name, size_t namelen, char *hint, size_t hintlen)
{
	size_t plen = strlen(prefix);
	for (; environ && environ[*at]; (*at)++) { /* clearenv() leaves it NULL */
		const char *var = environ[*at], *eq = strchr(var, '=');
		size_t len = eq ? (size_t)(eq - var) : strlen(var);
		if (len <= plen || strncmp(var, prefix, plen) != 0)
			continue;
		const char *rest = var + plen;
		size_t rlen = len - plen;
		bool file = rlen > 5 && strncmp(rest + rlen - 5, "_FILE", 5) == 0;
		size_t stem = file ? rlen - 5 : rlen;
		bool known = (rlen == 6 && strncmp(rest, "CONFIG", 6) == 0);
		for (size_t i = 0; i < n && !known; i++)
			known = env_names(&tab[i], rest, rlen) ||
				(file && env_names(&tab[i], rest, stem));
		if (known)
			continue;
		snprintf(name, namelen, "%.*s", (int)len, var);
		/* PREFIX_KEY_FILE misspelt in its key, or in _FILE. */
		const struct conf_key *near = nearest_key(tab, n, rest, file ? stem : rlen);
		bool near_file = file;
		for (size_t i = 0; i < n && !near; i++) {
			char with_file[80];
			snprintf(with_file, sizeof(with_file), "%s_file", tab[i].name);
			if (distance(rest, rlen, with_file) <= 2)
				near = &tab[i], near_file = true;
		}
		hint[0] = '\0';
		/* PREFIX_CONFIG names the file itself: there is no PREFIX_CONFIG_FILE. */
		if (file && stem == 6 && strncmp(rest, "CONFIG", 6) == 0) {
			snprintf(hint, hintlen, "%sCONFIG", prefix);
			(*at)++;
			return true;
		}
		if (near) {
			size_t h = (size_t)snprintf(hint, hintlen, "%s", prefix);
			for (const char *c = near->name; *c && h + 1 < hintlen; c++)
				hint[h++] = (char)toupper((unsigned char)*c);
			hint[h < hintlen ? h : hintlen - 1] = '\0';
			if (near_file)
				snprintf(hint + strlen(hint), hintlen - strlen(hint), "_FILE");
		}
		(*at)++;
		return true;
	}
	return false;
}

/* Finds --config FILE / --config=FILE in argv, consuming it. */
static bool take_config_flag(int *argc, char **argv, const char **path, char *err, size_t errlen)
{
	for (int i = 1; i < *argc; i++) {
		int used = 0;
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--config") == 0) {
			if (i + 1 >= *argc || !*argv[i + 1]) {
				snprintf(err, errlen, "--config: needs a file");
				return false;
			}
			*path = argv[i + 1];
			used = 2;
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			/* --config=$CONF with CONF unset would load nothing at all. */
			if (!argv[i][9]) {
				snprintf(err, errlen, "--config: needs a file");
				return false;
			}
			*path = argv[i] + 9;
			used = 1;
		}
		if (used) {
			memmove(&argv[i], &argv[i + used],
				(size_t)(*argc - i - used + 1) * sizeof(char *));
			*argc -= used;
			i--;
		}
	}
	return true;
}

static bool load_flags(const struct conf_key *tab, size_t n, void *settings, int *argc, char **argv,
		       char *err, size_t errlen)
{
	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0)
			break;
		if (strncmp(a, "--", 2) != 0)
			continue;
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const struct conf_key *k = find_key(tab, n, name, len);
		if (!k)
			continue; /* the command's own option */
		const char *value;
		int used = 1;
		if (eq) {
			value = eq + 1;
		} else if (i + 1 < *argc &&
			   (k->type != CONF_BOOL || strncmp(argv[i + 1], "--", 2) != 0)) {
			value = argv[i + 1];
			used = 2;
		} else if (k->type == CONF_BOOL) {
			value = "true";
		} else {
			snprintf(err, errlen, "%s: missing value for --%.*s", k->name, (int)len,
				 name);
			return false;
		}
		if (!set_key(k, settings, value, err, errlen))
			return false;
		memmove(&argv[i], &argv[i + used], (size_t)(*argc - i - used + 1) * sizeof(char *));
		*argc -= used;
		i--;
	}
	return true;
}

static bool load_all(const struct conf_key *tab, size_t n, void *settings, const char *env_prefix,
		     int how, int *argc, char **argv, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++)
		if (tab[i].def && !set_key(&tab[i], settings, tab[i].def, err, errlen))
			return false;

	char var[256];
	snprintf(var, sizeof(var), "%sCONFIG", env_prefix);
	const char *path = getenv(var);
	if (!take_config_flag(argc, argv, &path, err, errlen))
		return false;
	if (path && *path && !load_file(tab, n, settings, path, how, err, errlen))
		return false;
	if (!load_env(tab, n, settings, env_prefix, how, err, errlen))
		return false;
	return load_flags(tab, n, settings, argc, argv, err, errlen);
}

bool conf_load(const struct conf_key *tab, size_t n, void *settings, const char *env_prefix,
	       int *argc, char **argv, char *err, size_t errlen)
{
	return load_all(tab, n, settings, env_prefix, 0, argc, argv, err, errlen);
}

bool conf_load_again(const struct conf_key *tab, size_t n, void *settings, const char *env_prefix,
		     int *argc, char **argv, char *err, size_t errlen)
{
	return load_all(tab, n, settings, env_prefix, LOAD_AGAIN, argc, argv, err, errlen);
}

bool conf_peek(const struct conf_key *k, void *settings, const char *env_prefix, int argc,
	       char *const *argv)
{
	char **args = xcalloc((size_t)argc + 1, sizeof(char *));
	memcpy(args, argv, (size_t)argc * sizeof(char *));
	char err[512];
	/* Read a second time: a pipe or FIFO (--config <(...)) was read once, and a
	 * FIFO would block this open until a writer came, so they are passed over. */
	bool ok = load_all(k, 1, settings, env_prefix, LOAD_LENIENT | LOAD_AGAIN, &argc, args, err,
			   sizeof(err));
	free(args);
	return ok;
}

bool conf_same(const struct conf_key *k, const void *a, const void *b)
{
	const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
	switch (k->type) {
	case CONF_STRING: {
		const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
		return (!sa && !sb) || (sa && sb && strcmp(sa, sb) == 0);
	}
	case CONF_BOOL:
		return *(const bool *)fa == *(const bool *)fb;
	default:
		return *(const long long *)fa == *(const long long *)fb;
	}
}

void conf_copy(const struct conf_key *k, void *dst, const void *src)
{
	char *fd = (char *)dst + k->offset;
	const char *fs = (const char *)src + k->offset;
	switch (k->type) {
	case CONF_STRING: {
		const char *s = *(char *const *)fs;
		free(*(char **)fd);
		*(char **)fd = s ? xstrdup(s) : NULL;
		break;
	}
	case CONF_BOOL:
		*(bool *)fd = *(const bool *)fs;
		break;
	default:
		*(long long *)fd = *(const long long *)fs;
	}
}

void conf_free(const struct conf_key *tab, size_t n, void *settings)
{
	for (size_t i = 0; i < n; i++) {
		if (tab[i].type == CONF_STRING) {
			char **field = (char **)((char *)settings + tab[i].offset);
			free(*field);
			*field = NULL;
		}
	}
}

void conf_print_help(const struct conf_key *tab, size_t n, FILE *out)
{
	for (size_t i = 0; i < n; i++) {
		fprintf(out, "  --%-26s %s", tab[i].name, tab[i].help);
		if (tab[i].def && *tab[i].def)
			fprintf(out, " (default %s)", tab[i].def);
		if (tab[i].apply == CONF_RESTART)
			fprintf(out, " [restart to change]");
		fputc('\n', out);
	}
}
