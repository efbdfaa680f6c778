/*
 * util.c: clock, error names, futex and panic.
 */
#include "runtime/rt_int.h"

#include <linux/futex.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int64_t rt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t rt_now_ms(void)
{
    return rt_now_ns() / 1000000;
}

int64_t rt_deadline_ms(int64_t ms)
{
    if (ms < 0)
        return RT_NO_DEADLINE;
    return rt_now_ns() + ms * 1000000;
}

const char *rt_strerror(int err)
{
    if (err == 0)
        return "success";
    if (err > 0)
        err = -err;
    switch (-err) {
    case ETIMEDOUT: return "deadline passed";
    case ECANCELED: return "canceled (runtime shutting down or fd closed)";
    case EPIPE: return "channel closed";
    case EAGAIN: return "would block, try again";
    default: break;
    }
    const char *s = strerrordesc_np(-err);
    return s ? s : "unknown error";
}

/* Returns 0 when woken (or the value differed), -ETIMEDOUT, or -EINTR. */
int rt__futex_wait(atomic_int *addr, int val, int64_t timeout_ns)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        tp = &ts;
    }
    long r = syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, val, tp, NULL, 0);
    if (r < 0 && errno == ETIMEDOUT)
        return -ETIMEDOUT;
    if (r < 0 && errno == EINTR)
        return -EINTR;
    return 0;
}

int rt__futex_wake(atomic_int *addr, int n)
{
    long r = syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    return r < 0 ? -errno : (int)r;
}

void rt__panic(const char *fmt, ...)
{
    /* Through the log hook, so the last line of a dying process reads like
     * every other (module=rt, level=error, fatal=true). */
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof text ? (size_t)n : sizeof text - 1;
    text[len] = '\0';
    while (len > 0 && text[len - 1] == '\n')
        text[--len] = '\0';
    const char *msg = strncmp(text, "rt: ", 4) == 0 ? text + 4 : text;
    rt_log(RT_LOG_ERROR, "rt", msg, "fatal=true");
    abort();
}
