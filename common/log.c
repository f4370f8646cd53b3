/*
 * log: see log.h. The level and format are process-wide settings made at
 * start-up (and on reload); nothing else here is mutable.
 */
#include "log.h"
#include "buf.h"
#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_LEVEL_INFO;
static bool json_lines;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
	min_level = level;
}

void log_set_json(bool json)
{
	json_lines = json;
}

bool log_json(void)
{
	return json_lines;
}

bool log_enabled(enum log_level level)
{
	return level >= min_level;
}

bool log_parse_level(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	if (strcmp(name, "warning") == 0) {
		*out = LOG_LEVEL_WARN;
		return true;
	}
	return false;
}

/* Appends s to out as the inside of a JSON string: controls (C0, DEL, C1)
 * escaped, and a byte that is not part of well-formed UTF-8 as U+FFFD, so
 * that every line is JSON a shipper can parse, whatever a peer sent. */
static size_t json_escape(char *out, size_t cap, const char *s)
{
	size_t n = 0, len = strlen(s);
	for (size_t i = 0; i < len && n + 7 < cap;) {
		unsigned char c = (unsigned char)s[i];
		size_t seq = c < 0x80 ? 1 : utf8_sequence(s + i, len - i);
		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		} else if (seq == 0) {
			n += (size_t)snprintf(out + n, cap - n, "\\ufffd");
			seq = 1;
		} else if (c == 0xc2 && (unsigned char)s[i + 1] < 0xa0) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", (unsigned char)s[i + 1]);
		} else if (n + seq + 1 < cap) {
			memcpy(out + n, s + i, seq);
			n += seq;
		} else {
			break;
		}
		i += seq;
	}
	out[n] = '\0';
	return n;
}

static void log_write(enum log_level level, const char *fmt, va_list ap)
{
	char msg[2048], line[4608], stamp[40];
	struct timespec ts;
	struct tm tm;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", ts.tv_nsec / 1000000);

	int len;
	if (json_lines) {
		char esc[4200];
		json_escape(esc, sizeof(esc), msg);
		len = snprintf(line, sizeof(line),
			       "{\"ts\":\"%s\",\"level\":\"%s\",\"pid\":%d,\"msg\":\"%s\"}\n",
			       stamp, level_names[level], (int)getpid(), esc);
	} else {
		/* One call, one line: a newline in a peer's string cannot forge
		 * another, a terminal's control sequence cannot drive the
		 * reader's terminal, and no stray byte makes the journal keep
		 * the line as a blob. */
		text_printable(msg);
		len = snprintf(line, sizeof(line), "%s %-5s [%d] %s\n", stamp, level_names[level],
			       (int)getpid(), msg);
	}
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(line)) {
		len = sizeof(line) - 1;
		line[len - 1] = '\n';
	}
	/* A failed log write has nowhere to be reported. */
	ssize_t w = write(STDERR_FILENO, line, (size_t)len);
	(void)w;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level < min_level)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_write(level, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_write(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

bool log_quota_take(struct log_quota *q, long long interval_ms, int *held)
{
	long long now = clock_monotonic_ms();
	if (q->at_ms && now - q->at_ms < interval_ms) {
		q->held++;
		return false;
	}
	*held = q->held;
	q->at_ms = now;
	q->held = 0;
	return true;
}

void log_limited(struct log_quota *q, long long interval_ms, enum log_level level, const char *fmt,
		 ...)
{
	int held;
	if (level < min_level || !log_quota_take(q, interval_ms, &held))
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (held)
		log_msg(level, "%s (and %d more such line(s) since the last one)", line, held);
	else
		log_msg(level, "%s", line);
}
