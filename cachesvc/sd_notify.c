/*
 * sd_notify.c: the systemd notification protocol (see sd_notify.h), the
 * same wire format as libsystemd's sd_notify(3): one SOCK_DGRAM datagram
 * per call, the kernel attaching the sender's credentials, by which a
 * manager with NotifyAccess=main recognises the main process.
 */
#include "cachesvc/sd_notify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SD_STATE_MAX 4096

/* Fills *sa from $NOTIFY_SOCKET and returns the address length to pass to
 * sendto, 0 when the variable is unset or empty, or a negative errno. */
static int notify_addr(struct sockaddr_un *sa)
{
    const char *e = getenv("NOTIFY_SOCKET");
    if (e == NULL || e[0] == '\0')
        return 0;
    size_t n = strlen(e);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (e[0] == '@') {
        /* Abstract namespace: a leading NUL, then the name; the length
         * counts exactly the bytes of the name (no terminator). */
        if (n > sizeof sa->sun_path)
            return -ENAMETOOLONG;
        memcpy(sa->sun_path + 1, e + 1, n - 1);
        return (int)(offsetof(struct sockaddr_un, sun_path) + n);
    }
    if (e[0] != '/')
        return -EINVAL;   /* relative, or "vsock:" (systemd 254+): not ours */
    if (n >= sizeof sa->sun_path)
        return -ENAMETOOLONG;
    memcpy(sa->sun_path, e, n);
    return (int)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

int svc_sd_notify(const char *state)
{
    struct sockaddr_un sa;
    int len = notify_addr(&sa);
    if (len <= 0)
        return len;
    if (state == NULL || state[0] == '\0')
        return -EINVAL;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* Bounded wait when the manager's receive queue is full: a datagram
     * send blocks for room, and this may run on a runtime worker. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc = 1;
    ssize_t w;
    do {
        w = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                   (socklen_t)len);
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        rc = errno == EWOULDBLOCK ? -EAGAIN : -errno;
    close(fd);
    return rc;
}

int svc_sd_notifyf(const char *fmt, ...)
{
    char buf[SD_STATE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if (n > SD_STATE_MAX)
        return -EMSGSIZE;
    return svc_sd_notify(buf);
}

int svc_sd_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    return svc_sd_notifyf("RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
}

/* Parses a whole non-negative decimal number; -EINVAL for anything else. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

int64_t svc_sd_watchdog_usec(void)
{
    const char *u = getenv("WATCHDOG_USEC");
    if (u == NULL || u[0] == '\0')
        return 0;
    uint64_t usec, pid;
    if (parse_u64(u, &usec) < 0 || usec > INT64_MAX)
        return -EINVAL;
    const char *p = getenv("WATCHDOG_PID");
    if (p != NULL && p[0] != '\0') {
        if (parse_u64(p, &pid) < 0)
            return -EINVAL;
        if (pid != (uint64_t)getpid())
            return 0;   /* meant for another process (we were exec'd by it) */
    }
    return (int64_t)usec;
}
