/*
 * log: levelled, timestamped log lines on stderr.
 *
 * One line per call, written with a single write(2) so that lines from
 * several processes sharing a terminal or journal never interleave. Two
 * formats: plain text for people and JSON lines for log shippers. fatal() is
 * for start-up errors and broken invariants only; peers failing are logged
 * and handled, never fatal.
 */
#ifndef REGHOOK_LOG_H
#define REGHOOK_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
};

void log_set_level(enum log_level level);
void log_set_json(bool json);
bool log_json(void);
bool log_parse_level(const char *name, enum log_level *out) __attribute__((warn_unused_result));
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A line that anyone can make reghook write (a client's wrong token, a
 * failed TLS handshake) is written at most once per interval_ms: one client
 * looping on it wrote tens of thousands of lines a second, which pushed
 * everything else out of a rate-limited journal. log_quota_take() says
 * whether to write it now and, if so, sets *held to the number held back
 * since the last one (to say in the line). Zeroed: nothing logged yet.
 */
struct log_quota {
	long long at_ms; /* when the last line was let through; 0: never */
	int held;	 /* held back since */
};
bool log_quota_take(struct log_quota *q, long long interval_ms, int *held)
	__attribute__((warn_unused_result));

/*
 * A line that may repeat many times a second (a client looping on a wrong
 * token, the database refusing every statement) through a quota of its own:
 * written at most once per interval_ms, saying how many were held back since
 * the last one.
 */
void log_limited(struct log_quota *q, long long interval_ms, enum log_level level, const char *fmt,
		 ...) __attribute__((format(printf, 4, 5)));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
