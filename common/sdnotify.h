/*
 * sdnotify: the service manager's notify protocol (sd_notify(3)) without
 * libsystemd. When $NOTIFY_SOCKET names a unix datagram socket (a path, or
 * '@' for the abstract namespace), each message is one datagram of
 * newline-separated KEY=VALUE lines: READY=1, RELOADING=1 with
 * MONOTONIC_USEC, STOPPING=1, STATUS=text. Without $NOTIFY_SOCKET every
 * call does nothing. Sending never blocks: a full socket drops the message,
 * as the manager would rather lose a status line than stall the daemon.
 */
#ifndef REGHOOK_SDNOTIFY_H
#define REGHOOK_SDNOTIFY_H

#include <stdbool.h>

/*
 * Sends the lines as one datagram. True when sent, or when there is no
 * manager to tell; false (with the reason in errno) when sending failed.
 */
bool sdnotify_send(const char *lines);
/* "STATUS=" + the formatted text (a newline in it ends the line early). */
bool sdnotify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "RELOADING=1", "MONOTONIC_USEC=" now on CLOCK_MONOTONIC and a STATUS line. */
bool sdnotify_reloading(const char *status);

#endif
