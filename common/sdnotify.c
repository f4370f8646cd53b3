/*
 * sdnotify: see sdnotify.h. One socket per message: messages are a handful
 * per process lifetime (start, reloads, stop), so keeping a socket open
 * buys nothing.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

bool sdnotify_send(const char *lines)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un addr;
	size_t len;

	if (!path || !*path)
		return true;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path)) {
		errno = EINVAL;
		return false;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path, len);
	if (path[0] == '@')
		addr.sun_path[0] = '\0'; /* abstract namespace: no terminating NUL counted */
	socklen_t addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
					(path[0] == '@' ? 0 : 1));

	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	ssize_t n = sendto(fd, lines, strlen(lines), MSG_DONTWAIT | MSG_NOSIGNAL,
			   (struct sockaddr *)&addr, addrlen);
	int saved = errno;
	close(fd);
	errno = saved;
	return n == (ssize_t)strlen(lines);
}

bool sdnotify_status(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof(line), "STATUS=");
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	line[strcspn(line, "\n")] = '\0';
	return sdnotify_send(line);
}

bool sdnotify_reloading(const char *status)
{
	char msg[512];
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s",
		 (unsigned long long)now.tv_sec * 1000000ULL +
			 (unsigned long long)now.tv_nsec / 1000ULL,
		 status);
	return sdnotify_send(msg);
}
