/*
 * metrics: a small registry of counters, gauges and histograms, and its
 * writer in the Prometheus text exposition format (version 0.0.4).
 *
 * A daemon declares its metric families once, at start-up (name, help,
 * label names, histogram buckets), and takes a handle per series it will
 * touch, so that counting on a hot path is one addition with no lookup.
 * Series with labels known only later (an HTTP status code) are found or
 * made by their label values. Everything runs on the caller's one thread;
 * nothing here locks. A scrape writes every family, in the order declared,
 * with its HELP and TYPE lines.
 */
#ifndef REGHOOK_METRICS_H
#define REGHOOK_METRICS_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_MAX_LABELS 4

enum metrics_type {
	METRICS_COUNTER,   /* only goes up; its name ends in _total */
	METRICS_GAUGE,	   /* set to the current value */
	METRICS_HISTOGRAM, /* observations counted in cumulative buckets */
};

struct metrics;
struct metrics_family;
struct metrics_series;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/*
 * Declares a family. labels is a NULL-terminated list of label names (NULL:
 * none); a family without labels gets its one series at once, so it is
 * written (as 0) before anything happens. buckets (histograms only) are the
 * ascending upper bounds; +Inf is added. An invalid name, label or bucket
 * list is a programming error: fatal().
 */
struct metrics_family *metrics_family(struct metrics *m, enum metrics_type type, const char *name,
				      const char *help, const char *const *labels,
				      const double *buckets, size_t nbuckets);
/* The series with these label values (as many as the family has labels), made if new. */
struct metrics_series *metrics_series(struct metrics_family *f, const char *const *values);
/* The series of a family without labels. */
struct metrics_series *metrics_single(struct metrics_family *f);

/* Counters and gauges: adds v (a counter ignores a negative v). */
void metrics_add(struct metrics_series *s, double v);
/* Gauges: sets the value. */
void metrics_set(struct metrics_series *s, double v);
/* Histograms: counts one observation. */
void metrics_observe(struct metrics_series *s, double v);
/* The current value of a counter or gauge, or the count of a histogram. */
double metrics_value(const struct metrics_series *s);

/* Appends the whole registry in the text format. */
void metrics_write(const struct metrics *m, struct buf *out);

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
bool metrics_name_valid(const char *name);
/* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" */
bool metrics_label_valid(const char *name);
/* Writes v as the format wants it: shortest exact decimal, +Inf, -Inf, NaN. */
void metrics_format_value(double v, char *out, size_t len);

#endif
