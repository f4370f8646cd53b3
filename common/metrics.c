/*
 * metrics: see metrics.h.
 *
 * Families and their series are singly linked lists kept in creation
 * order, so a scrape lists them as declared. A histogram series keeps one
 * cumulative count per bucket (an observation increments every bucket
 * whose bound it does not exceed), so the writer prints them as they are.
 */
#include "metrics.h"
#include "log.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct metrics_series {
	struct metrics_series *next;
	struct metrics_family *family;	  /* borrowed */
	char *values[METRICS_MAX_LABELS]; /* owned */
	double value;			  /* counter, gauge; histogram: the sum */
	unsigned long long count;	  /* histogram: observations */
	unsigned long long *buckets;	  /* owned, histogram: cumulative counts */
};

struct metrics_family {
	struct metrics_family *next;
	enum metrics_type type;
	char *name, *help; /* owned */
	char *labels[METRICS_MAX_LABELS];
	int nlabels;
	double *bounds; /* owned, histogram */
	size_t nbounds;
	struct metrics_series *series, *last; /* owned list */
};

struct metrics {
	struct metrics_family *families, *last; /* owned list */
};

struct metrics *metrics_new(void)
{
	return xcalloc(1, sizeof(struct metrics));
}

static void series_free(struct metrics_series *s, int nlabels)
{
	for (int i = 0; i < nlabels; i++)
		free(s->values[i]);
	free(s->buckets);
	free(s);
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	while (m->families) {
		struct metrics_family *f = m->families;
		m->families = f->next;
		while (f->series) {
			struct metrics_series *s = f->series;
			f->series = s->next;
			series_free(s, f->nlabels);
		}
		for (int i = 0; i < f->nlabels; i++)
			free(f->labels[i]);
		free(f->name);
		free(f->help);
		free(f->bounds);
		free(f);
	}
	free(m);
}

bool metrics_name_valid(const char *name)
{
	if (!name || !*name || isdigit((unsigned char)*name))
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != ':')
			return false;
	return true;
}

bool metrics_label_valid(const char *name)
{
	if (!metrics_name_valid(name) || strchr(name, ':') || strncmp(name, "__", 2) == 0)
		return false;
	return true;
}

struct metrics_family *metrics_family(struct metrics *m, enum metrics_type type, const char *name,
				      const char *help, const char *const *labels,
				      const double *buckets, size_t nbuckets)
{
	if (!metrics_name_valid(name))
		fatal("metrics: invalid metric name '%s'", name ? name : "(null)");
	for (struct metrics_family *f = m->families; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			fatal("metrics: %s declared twice", name);
	if (type == METRICS_COUNTER &&
	    (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total") != 0))
		fatal("metrics: counter %s does not end in _total", name);
	if (type == METRICS_HISTOGRAM && nbuckets == 0)
		fatal("metrics: histogram %s has no buckets", name);
	for (size_t i = 1; i < nbuckets; i++)
		if (!(buckets[i] > buckets[i - 1]))
			fatal("metrics: buckets of %s are not ascending", name);

	struct metrics_family *f = xcalloc(1, sizeof(*f));
	f->type = type;
	f->name = xstrdup(name);
	f->help = xstrdup(help ? help : "");
	for (; labels && labels[f->nlabels]; f->nlabels++) {
		const char *l = labels[f->nlabels];
		if (f->nlabels == METRICS_MAX_LABELS || !metrics_label_valid(l) ||
		    (type == METRICS_HISTOGRAM && strcmp(l, "le") == 0))
			fatal("metrics: invalid or too many labels on %s ('%s')", name, l);
		f->labels[f->nlabels] = xstrdup(l);
	}
	if (type == METRICS_HISTOGRAM) {
		f->nbounds = nbuckets;
		f->bounds = xmalloc(nbuckets * sizeof(double));
		memcpy(f->bounds, buckets, nbuckets * sizeof(double));
	}
	if (m->last)
		m->last->next = f;
	else
		m->families = f;
	m->last = f;
	if (f->nlabels == 0)
		metrics_series(f, NULL);
	return f;
}

struct metrics_series *metrics_series(struct metrics_family *f, const char *const *values)
{
	for (struct metrics_series *s = f->series; s; s = s->next) {
		int i = 0;
		while (i < f->nlabels && strcmp(s->values[i], values[i]) == 0)
			i++;
		if (i == f->nlabels)
			return s;
	}
	struct metrics_series *s = xcalloc(1, sizeof(*s));
	s->family = f;
	for (int i = 0; i < f->nlabels; i++)
		s->values[i] = xstrdup(values[i]);
	if (f->type == METRICS_HISTOGRAM)
		s->buckets = xcalloc(f->nbounds, sizeof(unsigned long long));
	if (f->last)
		f->last->next = s;
	else
		f->series = s;
	f->last = s;
	return s;
}

struct metrics_series *metrics_single(struct metrics_family *f)
{
	return f->series;
}

void metrics_add(struct metrics_series *s, double v)
{
	if (s->family->type == METRICS_COUNTER && v < 0)
		return;
	s->value += v;
}

void metrics_set(struct metrics_series *s, double v)
{
	s->value = v;
}

void metrics_observe(struct metrics_series *s, double v)
{
	const struct metrics_family *f = s->family;
	for (size_t i = 0; i < f->nbounds; i++)
		if (v <= f->bounds[i])
			s->buckets[i]++;
	s->count++;
	s->value += v;
}

double metrics_value(const struct metrics_series *s)
{
	return s->family->type == METRICS_HISTOGRAM ? (double)s->count : s->value;
}

void metrics_format_value(double v, char *out, size_t len)
{
	if (isnan(v)) {
		snprintf(out, len, "NaN");
	} else if (isinf(v)) {
		snprintf(out, len, "%s", v > 0 ? "+Inf" : "-Inf");
	} else if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(out, len, "%.0f", v);
	} else {
		/* The fewest digits that read back as the same double. */
		for (int prec = 1; prec <= 17; prec++) {
			snprintf(out, len, "%.*g", prec, v);
			if (strtod(out, NULL) == v)
				break;
		}
	}
}

/* Label values escape backslash, double quote and newline; HELP only the first and last. */
static void put_escaped(struct buf *out, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			buf_puts(out, "\\\\");
		else if (*s == '\n')
			buf_puts(out, "\\n");
		else if (quote && *s == '"')
			buf_puts(out, "\\\"");
		else
			buf_putc(out, *s);
	}
}

/* name{labels...[,le="bound"]} value */
static void put_sample(struct buf *out, const struct metrics_series *s, const char *suffix,
		       const char *le, double value)
{
	const struct metrics_family *f = s->family;
	char num[64];
	buf_puts(out, f->name);
	buf_puts(out, suffix);
	if (f->nlabels || le) {
		buf_putc(out, '{');
		for (int i = 0; i < f->nlabels; i++) {
			buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
			put_escaped(out, s->values[i], true);
			buf_putc(out, '"');
		}
		if (le)
			buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
		buf_putc(out, '}');
	}
	metrics_format_value(value, num, sizeof(num));
	buf_printf(out, " %s\n", num);
}

void metrics_write(const struct metrics *m, struct buf *out)
{
	static const char *const type_names[] = {"counter", "gauge", "histogram"};
	char le[64];
	for (const struct metrics_family *f = m->families; f; f = f->next) {
		buf_printf(out, "# HELP %s ", f->name);
		put_escaped(out, f->help, false);
		buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
		for (const struct metrics_series *s = f->series; s; s = s->next) {
			if (f->type != METRICS_HISTOGRAM) {
				put_sample(out, s, "", NULL, s->value);
				continue;
			}
			for (size_t i = 0; i < f->nbounds; i++) {
				metrics_format_value(f->bounds[i], le, sizeof(le));
				put_sample(out, s, "_bucket", le, (double)s->buckets[i]);
			}
			put_sample(out, s, "_bucket", "+Inf", (double)s->count);
			put_sample(out, s, "_sum", NULL, s->value);
			put_sample(out, s, "_count", NULL, (double)s->count);
		}
	}
}
