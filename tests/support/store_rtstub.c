/*
 * store_rtstub.c: a single-threaded stand-in for the runtime calls the
 * store makes, so that the store's unit and backend tests run without the
 * scheduler. rt_self() says "not a coroutine" (the SQLite backend then runs
 * its calls inline), waits on fds are poll(2), semaphores and events are
 * counters (a wait that would block fails at once: with one thread nobody
 * could signal). Only for tests that never link the real runtime.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/rt.h"

rt_co *rt_self(void)
{
    return NULL;
}

intptr_t rt_blocking(intptr_t (*fn)(void *arg), void *arg)
{
    return fn(arg);
}

int64_t rt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int rt_sleep(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    return 0;
}

int64_t rt_now_ms(void)
{
    return rt_now_ns() / 1000000;
}

int64_t rt_deadline_ms(int64_t ms)
{
    return ms < 0 ? RT_NO_DEADLINE : rt_now_ns() + ms * 1000000;
}

int rt_fd_register(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

int rt_fd_unregister(int fd)
{
    (void)fd;
    return 0;
}

int rt_wait_fd(int fd, int events, int64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = 0};
    if (events & RT_READ)
        p.events |= POLLIN;
    if (events & RT_WRITE)
        p.events |= POLLOUT;
    for (;;) {
        int64_t left = deadline == RT_NO_DEADLINE ? -1 : (deadline - rt_now_ns()) / 1000000;
        if (deadline != RT_NO_DEADLINE && left < 0)
            return -ETIMEDOUT;
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0) {
            int got = 0;
            if (p.revents & (POLLIN | POLLHUP | POLLERR))
                got |= RT_READ;
            if (p.revents & (POLLOUT | POLLHUP | POLLERR))
                got |= RT_WRITE;
            got &= events;
            return got ? got : events;
        }
    }
}

struct rt_sem {
    int64_t count;
};

rt_sem *rt_sem_new(int64_t count)
{
    rt_sem *s = malloc(sizeof *s);
    if (s != NULL)
        s->count = count;
    return s;
}

void rt_sem_free(rt_sem *s)
{
    free(s);
}

int rt_sem_acquire(rt_sem *s, int64_t deadline)
{
    (void)deadline;
    if (s->count <= 0)
        return -ETIMEDOUT;
    s->count--;
    return 0;
}

void rt_sem_release(rt_sem *s)
{
    s->count++;
}

struct rt_event {
    int signaled;
};

rt_event *rt_event_new(void)
{
    return calloc(1, sizeof(rt_event));
}

void rt_event_free(rt_event *ev)
{
    free(ev);
}

void rt_event_signal(rt_event *ev)
{
    ev->signaled = 1;
}

int rt_event_wait(rt_event *ev, int64_t deadline)
{
    (void)deadline;
    if (!ev->signaled)
        return -ETIMEDOUT;
    ev->signaled = 0;
    return 0;
}

void rt_yield(void)
{
}
