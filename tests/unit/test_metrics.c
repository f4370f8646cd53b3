/*
 * Unit tests of common/metrics.c: the exact text a scrape gets (HELP and
 * TYPE lines, label escaping, cumulative histogram buckets ending in +Inf),
 * number formatting, and name validation.
 */
#include "metrics.h"
#include "unit.h"

#include <math.h>
#include <stdlib.h>

static char *written(const struct metrics *m)
{
	struct buf b = BUF_INIT;
	metrics_write(m, &b);
	return buf_steal(&b);
}

UNIT_TEST(counters_and_gauges)
{
	struct metrics *m = metrics_new();
	static const char *const outcome[] = {"outcome", NULL};
	struct metrics_family *events = metrics_family(m, METRICS_COUNTER, "app_events_total",
						       "Events by outcome.", outcome, NULL, 0);
	struct metrics_series *ok = metrics_series(events, (const char *const[]){"ok"});
	metrics_series(events, (const char *const[]){"bad"});
	metrics_add(ok, 2);
	metrics_add(metrics_series(events, (const char *const[]){"ok"}), 1);
	metrics_add(ok, -5); /* a counter never goes down */
	struct metrics_family *depth =
		metrics_family(m, METRICS_GAUGE, "app_depth", "Queue depth.", NULL, NULL, 0);
	metrics_set(metrics_single(depth), 7);
	metrics_add(metrics_single(depth), -2.5);

	char *text = written(m);
	UNIT_CHECK_STR(text, "# HELP app_events_total Events by outcome.\n"
			     "# TYPE app_events_total counter\n"
			     "app_events_total{outcome=\"ok\"} 3\n"
			     "app_events_total{outcome=\"bad\"} 0\n"
			     "# HELP app_depth Queue depth.\n"
			     "# TYPE app_depth gauge\n"
			     "app_depth 4.5\n");
	UNIT_CHECK(metrics_value(ok) == 3, "value %g", metrics_value(ok));
	free(text);
	metrics_free(m);
}

UNIT_TEST(histogram_buckets_are_cumulative)
{
	struct metrics *m = metrics_new();
	static const double bounds[] = {0.1, 1, 2.5};
	static const char *const route[] = {"route", NULL};
	struct metrics_family *f = metrics_family(m, METRICS_HISTOGRAM, "app_seconds",
						  "Time taken.", route, bounds, 3);
	struct metrics_series *s = metrics_series(f, (const char *const[]){"/x"});
	metrics_observe(s, 0.05);
	metrics_observe(s, 0.1); /* on a bound: counted in it */
	metrics_observe(s, 2);
	metrics_observe(s, 100);

	char *text = written(m);
	UNIT_CHECK_STR(text, "# HELP app_seconds Time taken.\n"
			     "# TYPE app_seconds histogram\n"
			     "app_seconds_bucket{route=\"/x\",le=\"0.1\"} 2\n"
			     "app_seconds_bucket{route=\"/x\",le=\"1\"} 2\n"
			     "app_seconds_bucket{route=\"/x\",le=\"2.5\"} 3\n"
			     "app_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
			     "app_seconds_sum{route=\"/x\"} 102.15\n"
			     "app_seconds_count{route=\"/x\"} 4\n");
	free(text);
	metrics_free(m);
}

UNIT_TEST(histogram_without_labels_is_written_empty)
{
	struct metrics *m = metrics_new();
	static const double bounds[] = {0.005};
	metrics_family(m, METRICS_HISTOGRAM, "h", "", NULL, bounds, 1);
	char *text = written(m);
	UNIT_CHECK_STR(text, "# HELP h \n"
			     "# TYPE h histogram\n"
			     "h_bucket{le=\"0.005\"} 0\n"
			     "h_bucket{le=\"+Inf\"} 0\n"
			     "h_sum 0\n"
			     "h_count 0\n");
	free(text);
	metrics_free(m);
}

UNIT_TEST(escaping)
{
	struct metrics *m = metrics_new();
	static const char *const labels[] = {"a", "b", NULL};
	struct metrics_family *f = metrics_family(m, METRICS_GAUGE, "g",
						  "back\\slash\nand \"quote\"", labels, NULL, 0);
	metrics_set(metrics_series(f, (const char *const[]){"q\"x", "n\nb\\"}), 1);
	char *text = written(m);
	UNIT_CHECK_STR(text, "# HELP g back\\\\slash\\nand \"quote\"\n"
			     "# TYPE g gauge\n"
			     "g{a=\"q\\\"x\",b=\"n\\nb\\\\\"} 1\n");
	free(text);
	metrics_free(m);
}

UNIT_TEST(number_formats)
{
	static const struct {
		double v;
		const char *want;
	} cases[] = {
		{0, "0"},
		{42, "42"},
		{-3, "-3"},
		{0.005, "0.005"},
		{0.1, "0.1"},
		{2.5, "2.5"},
		{1e300, "1e+300"},
		{1234567890123.0, "1234567890123"},
		{1.0 / 3, "0.3333333333333333"},
	};
	char out[64];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		metrics_format_value(cases[i].v, out, sizeof(out));
		UNIT_CHECK_STR(out, cases[i].want);
	}
	metrics_format_value(INFINITY, out, sizeof(out));
	UNIT_CHECK_STR(out, "+Inf");
	metrics_format_value(-INFINITY, out, sizeof(out));
	UNIT_CHECK_STR(out, "-Inf");
	metrics_format_value(NAN, out, sizeof(out));
	UNIT_CHECK_STR(out, "NaN");
}

UNIT_TEST(names)
{
	UNIT_CHECK(metrics_name_valid("reghook_events_total"), "plain name");
	UNIT_CHECK(metrics_name_valid("a:b_c9"), "colon and digit");
	UNIT_CHECK(!metrics_name_valid("9a"), "leading digit");
	UNIT_CHECK(!metrics_name_valid("a-b"), "dash");
	UNIT_CHECK(!metrics_name_valid(""), "empty");
	UNIT_CHECK(metrics_label_valid("outcome"), "label");
	UNIT_CHECK(!metrics_label_valid("__name"), "reserved label");
	UNIT_CHECK(!metrics_label_valid("a:b"), "colon in label");
}

int main(void)
{
	UNIT_RUN(counters_and_gauges);
	UNIT_RUN(histogram_buckets_are_cumulative);
	UNIT_RUN(histogram_without_labels_is_written_empty);
	UNIT_RUN(escaping);
	UNIT_RUN(number_formats);
	UNIT_RUN(names);
	return UNIT_DONE();
}
