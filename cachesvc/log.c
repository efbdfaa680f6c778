/*
 * log.c: logfmt lines, one write(2) each.
 */
#include "cachesvc/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = SVC_LOG_INFO;
static atomic_int log_fd = 2;
static _Atomic(svc_log_reqid_fn) log_reqid;

void svc_log_set_level(int level)
{
    if (level >= SVC_LOG_DEBUG && level <= SVC_LOG_ERROR)
        atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int svc_log_get_level(void)
{
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

void svc_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

void svc_log_set_reqid_source(svc_log_reqid_fn fn)
{
    atomic_store(&log_reqid, fn);
}

/* Appends msg quoted for logfmt: '"' and '\\' escaped, control bytes as
 * spaces. Returns the new length (never past cap - 1). */
static size_t put_quoted(char *buf, size_t len, size_t cap, const char *s)
{
    if (len + 1 < cap)
        buf[len++] = '"';
    for (; *s && len + 3 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else {
            buf[len++] = c < 0x20 ? ' ' : (char)c;
        }
    }
    if (len + 1 < cap)
        buf[len++] = '"';
    return len;
}

void svc_log(int level, const char *reqid, const char *msg, const char *fmt, ...)
{
    if (level < svc_log_get_level())
        return;
    char line[2048];
    size_t cap = sizeof line - 1; /* room for the newline */
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, cap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     svc_log_level_name(level));
    size_t len = n > 0 ? (size_t)n : 0;
    len = put_quoted(line, len, cap, msg ? msg : "");
    char idbuf[96];
    svc_log_reqid_fn idfn;
    if (reqid == NULL && (idfn = atomic_load_explicit(&log_reqid, memory_order_relaxed)) != NULL &&
        idfn(idbuf, sizeof idbuf) > 0)
        reqid = idbuf;
    if (reqid != NULL && reqid[0] != '\0') {
        /* A client's X-Request-Id is any printable ASCII: quoted when it
         * holds a byte that would end or confuse an unquoted value. */
        static const char key[] = " req=";
        size_t kl = sizeof key - 1, rl = strnlen(reqid, 128);
        if (len + kl + 2 * rl + 2 < cap) {
            memcpy(line + len, key, kl);
            len += kl;
            if (strcspn(reqid, "\"=\\ ") < rl) {
                len = put_quoted(line, len, cap, reqid);
            } else {
                memcpy(line + len, reqid, rl);
                len += rl;
            }
        }
    }
    if (fmt != NULL && fmt[0] != '\0' && len + 1 < cap) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        n = vsnprintf(line + len, cap - len, fmt, ap);
        va_end(ap);
        if (n > 0)
            len += (size_t)n < cap - len ? (size_t)n : cap - len - 1;
    }
    line[len++] = '\n';
    ssize_t w = write(atomic_load(&log_fd), line, len);
    (void)w;
}
