/*
 * netpoll.c: epoll, edge-triggered, every fd registered once for both
 * directions. Each fd has a slot with one reader and one writer waiter and
 * two sticky "ready" flags: an edge that arrives while nobody waits sets the
 * flag, and the next wait consumes it instead of parking, so no edge is
 * lost. Events carry the slot's sequence number, so events of a closed fd
 * never wake the waiters of a new fd with the same number.
 *
 * One thread at a time owns the netpoll (poll_owner): an idle worker that
 * blocks until the nearest timer, a busy worker polling without blocking
 * when it runs dry, or the monitor when nobody polled for a while. Other
 * threads break a blocking poll through an eventfd; breaks are
 * de-duplicated by break_pending, which is set before the eventfd is
 * written and cleared only after it was drained, so while it is set a
 * write is pending or the poller is already awake.
 */
#include "runtime/rt_int.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define EV_BREAK UINT64_MAX
#define MAX_EVENTS 128
#define IOV_CHUNK 64

typedef struct rt_fd {
    rt_spin lock;
    uint32_t seq;
    uint8_t registered;
    uint8_t owned;            /* created by the runtime: closed at shutdown */
    uint8_t rd_ready, wr_ready;
    rt_waiter *rd, *wr;
} rt_fd;

static rt_fd *fds;
static size_t nfds, fds_bytes;
static int epfd = -1, evfd = -1;
static atomic_int poll_owner;
static atomic_int break_pending;
static struct epoll_event events[MAX_EVENTS];
_Atomic int64_t rt__last_poll_ns;

/* errno-safe syscall wrappers: errno is read right after the call, in a
 * function that never switches (rt.h, the rule). */
__attribute__((noinline)) static ssize_t sys_readv(int fd, const struct iovec *v, int c)
{
    ssize_t r = readv(fd, v, c);
    return r < 0 ? -errno : r;
}
__attribute__((noinline)) static ssize_t sys_writev(int fd, const struct iovec *v, int c)
{
    ssize_t r = writev(fd, v, c);
    return r < 0 ? -errno : r;
}
__attribute__((noinline)) static int sys_accept(int fd, struct sockaddr *a, socklen_t *l)
{
    int r = accept4(fd, a, l, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return r < 0 ? -errno : r;
}
__attribute__((noinline)) static int sys_connect(int fd, const struct sockaddr *a, socklen_t l)
{
    int r = connect(fd, a, l);
    return r < 0 ? -errno : r;
}
__attribute__((noinline)) static int sys_epoll_ctl(int op, int fd, struct epoll_event *ev)
{
    int r = epoll_ctl(epfd, op, fd, ev);
    return r < 0 ? -errno : r;
}
__attribute__((noinline)) static int sys_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}
__attribute__((noinline)) static int sys_close(int fd)
{
    int r = close(fd);
    return r < 0 ? -errno : 0;
}

int rt__netpoll_init(void)
{
    struct rlimit rl;
    size_t n = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        n = rl.rlim_cur;
    if (n > (1u << 22))
        n = 1u << 22;
    if (n < 1024)
        n = 1024;
    fds_bytes = n * sizeof(rt_fd);
    fds = mmap(NULL, fds_bytes, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (fds == MAP_FAILED) {
        fds = NULL;
        return -ENOMEM;
    }
    nfds = n;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epfd < 0 || evfd < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV_BREAK};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev) < 0)
        goto fail;
    atomic_store(&poll_owner, 0);
    atomic_store(&break_pending, 0);
    atomic_store(&rt__last_poll_ns, rt_now_ns());
    return 0;
fail:
    rt__netpoll_fini();
    return -EMFILE;
}

void rt__netpoll_fini(void)
{
    /* Sockets the runtime created belong to coroutines that are gone. */
    for (size_t i = 0; fds && i < nfds; i++)
        if (fds[i].registered && fds[i].owned)
            close((int)i);
    if (fds)
        munmap(fds, fds_bytes);
    fds = NULL;
    nfds = 0;
    if (epfd >= 0) close(epfd);
    if (evfd >= 0) close(evfd);
    epfd = evfd = -1;
}

bool rt__netpoll_try_own(void)
{
    if (atomic_load_explicit(&poll_owner, RT_RELAXED))
        return false;
    return !atomic_exchange_explicit(&poll_owner, 1, RT_ACQUIRE);
}

int rt__netpoll_owned(void)
{
    return atomic_load(&poll_owner);
}

void rt__netpoll_release(void)
{
    atomic_store_explicit(&poll_owner, 0, RT_RELEASE);
    /* An idle worker may have gone to sleep because we held the poll: let
     * one come back to take it. */
    rt__wakep();
}

void rt__netpoll_break(void)
{
    if (atomic_load_explicit(&break_pending, RT_RELAXED) ||
        atomic_exchange(&break_pending, 1))
        return;
    uint64_t one = 1;
    if (write(evfd, &one, sizeof one) < 0) { /* the counter is full: already broken */ }
}

int rt__netpoll(int64_t timeout_ns, rt_worker *w)
{
    int timeout_ms = 0;
    bool blocking = timeout_ns != 0;
    if (blocking) {
        int64_t until = rt__timers_poll_begin();
        if (until == INT64_MAX) {
            timeout_ms = -1;
        } else {
            int64_t d = until - rt_now_ns();
            timeout_ms = d <= 0 ? 0 : (int)((d + 999999) / 1000000);
        }
    }
    if (w)
        RT_STAT_ADD(w->st_polls, 1);
    int n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
    atomic_store_explicit(&rt__last_poll_ns, rt_now_ns(), RT_RELAXED);
    if (blocking) {
        rt__timers_poll_end();
        if (w)
            rt__netpoll_leave_idle(w);
    }
    int readied = 0;
    for (int i = 0; i < n; i++) {
        uint64_t data = events[i].data.u64;
        uint32_t ev = events[i].events;
        if (data == EV_BREAK) {
            /* Drain first, then accept new breaks: the other order lets a
             * break written between the two be drained with the flag left
             * set, and every later break would be dropped. */
            uint64_t v;
            if (read(evfd, &v, sizeof v) < 0) { /* drained already */ }
            atomic_store(&break_pending, 0);
            continue;
        }
        size_t fd = (size_t)(data & 0xffffffffu);
        uint32_t seq = (uint32_t)(data >> 32);
        if (fd >= nfds)
            continue;
        rt_fd *f = &fds[fd];
        rt_waiter *wake[2];
        int res[2], nw = 0;
        rt__spin_lock(&f->lock);
        if (!f->registered || f->seq != seq) {
            rt__spin_unlock(&f->lock);
            continue;
        }
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            rt_waiter *r = f->rd;
            f->rd = NULL;
            if (r && rt__waiter_claim(r)) {
                res[nw] = RT_READ;
                wake[nw++] = r;
            } else {
                f->rd_ready = 1;
            }
        }
        if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
            rt_waiter *wr = f->wr;
            f->wr = NULL;
            if (wr && rt__waiter_claim(wr)) {
                res[nw] = RT_WRITE;
                wake[nw++] = wr;
            } else {
                f->wr_ready = 1;
            }
        }
        rt__spin_unlock(&f->lock);
        for (int j = 0; j < nw; j++)
            rt__waiter_complete(wake[j], res[j]);
        readied += nw;
    }
    return readied;
}

/* ------------------------------------------------------------------------ */
/* Registration                                                              */

static int do_register(int fd, int owned)
{
    if (fd < 0 || (size_t)fd >= nfds)
        return fd < 0 ? -EBADF : -EMFILE;
    int rc = sys_set_nonblock(fd);
    if (rc < 0)
        return rc;
    rt_fd *f = &fds[fd];
    rt__spin_lock(&f->lock);
    uint32_t seq = ++f->seq;
    int was = f->registered;
    f->registered = 1;
    f->owned = (uint8_t)(was ? (f->owned | owned) : owned);
    f->rd_ready = f->wr_ready = 0;
    rt__spin_unlock(&f->lock);
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.u64 = (uint64_t)(uint32_t)fd | ((uint64_t)seq << 32),
    };
    rc = sys_epoll_ctl(EPOLL_CTL_ADD, fd, &ev);
    if (rc == -EEXIST) {
        /* Registered already (or an earlier fd with this number was closed
         * behind our back while dup'ed): re-arm with the new sequence. */
        rc = sys_epoll_ctl(EPOLL_CTL_MOD, fd, &ev);
        if (rc == 0 && was)
            f->rd_ready = f->wr_ready = 1;  /* a spurious retry is harmless */
    }
    if (rc < 0) {
        rt__spin_lock(&f->lock);
        f->registered = 0;
        rt__spin_unlock(&f->lock);
    }
    return rc;
}

int rt_fd_register(int fd)
{
    return do_register(fd, 0);
}

int rt_fd_unregister(int fd)
{
    if (fd < 0 || (size_t)fd >= nfds || !fds)
        return -EBADF;
    rt_fd *f = &fds[fd];
    rt_waiter *wake[2];
    int nw = 0;
    rt__spin_lock(&f->lock);
    if (!f->registered) {
        rt__spin_unlock(&f->lock);
        return -EBADF;
    }
    f->registered = 0;
    f->owned = 0;
    f->seq++;
    if (f->rd && rt__waiter_claim(f->rd))
        wake[nw++] = f->rd;
    if (f->wr && f->wr != f->rd && rt__waiter_claim(f->wr))
        wake[nw++] = f->wr;
    f->rd = f->wr = NULL;
    rt__spin_unlock(&f->lock);
    for (int i = 0; i < nw; i++)
        rt__waiter_complete(wake[i], -ECANCELED);
    sys_epoll_ctl(EPOLL_CTL_DEL, fd, NULL);
    return 0;
}

int rt_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    rt_fd_unregister(fd);
    return sys_close(fd);
}

int rt_wait_fd(int fd, int events, int64_t deadline)
{
    rt_worker *me = rt__cur_worker();
    if (fd < 0 || (size_t)fd >= nfds || !fds)
        return -EBADF;
    if (!me || !me->cur)
        return -EPERM;
    events &= RT_READ | RT_WRITE;
    if (!events)
        return -EINVAL;
    rt_fd *f = &fds[fd];
    rt_waiter w;
    rt__waiter_init(&w, me->cur);
    rt__spin_lock(&f->lock);
    if (!f->registered) {
        rt__spin_unlock(&f->lock);
        return -EBADF;
    }
    int ready = 0;
    if ((events & RT_READ) && f->rd_ready) ready |= RT_READ;
    if ((events & RT_WRITE) && f->wr_ready) ready |= RT_WRITE;
    if (ready) {
        if (ready & RT_READ) f->rd_ready = 0;
        if (ready & RT_WRITE) f->wr_ready = 0;
        rt__spin_unlock(&f->lock);
        return ready;
    }
    if (((events & RT_READ) && f->rd) || ((events & RT_WRITE) && f->wr)) {
        rt__spin_unlock(&f->lock);
        return -EBUSY;
    }
    if (deadline != RT_NO_DEADLINE && deadline <= rt_now_ns()) {
        rt__spin_unlock(&f->lock);
        return -ETIMEDOUT;
    }
    int r;
    if (deadline == RT_NO_DEADLINE) {
        /* A locked waiter: only holders of f->lock complete it. */
        w.racy = 0;
        if (events & RT_READ) f->rd = &w;
        if (events & RT_WRITE) f->wr = &w;
        r = rt__waiter_wait_unlock(&w, &f->lock);
    } else {
        if (events & RT_READ) f->rd = &w;
        if (events & RT_WRITE) f->wr = &w;
        rt__spin_unlock(&f->lock);
        r = rt__wait_deadline(&w, deadline);
    }
    if (r < 0 || events == (RT_READ | RT_WRITE)) {
        rt__spin_lock(&f->lock);
        if (f->rd == &w) f->rd = NULL;
        if (f->wr == &w) f->wr = NULL;
        rt__spin_unlock(&f->lock);
    }
    return r;
}

/* ------------------------------------------------------------------------ */
/* Waiting without a coroutine                                               */

/* The runtime's view of an rt_await. Its waiter has no coroutine and no
 * thread: whoever claims it (the netpoll's edge, the deadline's timer,
 * rt_fd_unregister) completes it, and completion calls await_fire(). */
typedef struct rt__await {
    rt_waiter w;              /* first: fire() gets &a->w */
    rt_timer t;               /* armed when timed */
    rt_fn fn;
    void *arg;
    size_t stack_size;
    const char *name;
    int fd;
    int events;
    int timed;
    int result;
} rt__await;
_Static_assert(sizeof(rt__await) <= sizeof(rt_await), "rt_await is too small");

static void await_fire(rt_waiter *w)
{
    rt__await *a = (rt__await *)w;
    if (a->timed)
        rt__timer_del(&a->t);     /* the timer no longer touches a */
    /* The slot may still point at w when the deadline came first or only
     * one of two directions was ready (an edge or rt_fd_unregister clears
     * what it claims). */
    if (a->timed || a->events == (RT_READ | RT_WRITE)) {
        rt_fd *f = &fds[a->fd];
        rt__spin_lock(&f->lock);
        if (f->rd == w) f->rd = NULL;
        if (f->wr == w) f->wr = NULL;
        rt__spin_unlock(&f->lock);
    }
    a->result = w->result;
    /* From here on a belongs to fn, which may run (and re-arm a) before
     * rt_spawn_ex returns: copy what the spawn needs first. */
    rt_fn fn = a->fn;
    void *arg = a->arg;
    rt_spawn_opts o = {.stack_size = a->stack_size, .name = a->name};
    int rc = rt_spawn_ex(NULL, fn, arg, &o);
    if (rc == -ENOMEM) {
        /* No stack to be had now: fire again in 10 ms through the timer
         * alone (the slot no longer points at w). */
        atomic_store_explicit(&w->claimed, 0, RT_RELAXED);
        a->timed = 1;
        a->t.when = rt_now_ns() + 10 * 1000000LL;
        a->t.w = w;
        a->t.result = a->result;
        rt__timer_add(&a->t);
    }
    /* -ECANCELED: the runtime is stopping, fn is never called. */
}

int rt_fd_await(rt_await *pub, int fd, int events, int64_t deadline, rt_fn fn, void *arg,
                const rt_spawn_opts *opts)
{
    rt__await *a = (rt__await *)pub;
    if (fd < 0 || (size_t)fd >= nfds || !fds)
        return -EBADF;
    events &= RT_READ | RT_WRITE;
    if (!events || !fn)
        return -EINVAL;
    if (atomic_load_explicit(&rt__rt.stopping, RT_RELAXED))
        return -ECANCELED;
    rt__waiter_init(&a->w, NULL);
    a->w.fire = await_fire;
    a->fn = fn;
    a->arg = arg;
    a->stack_size = opts ? opts->stack_size : 0;
    a->name = opts ? opts->name : NULL;
    a->fd = fd;
    a->events = events;
    a->timed = deadline != RT_NO_DEADLINE;
    a->result = 0;
    a->t.when = deadline;
    a->t.idx = -1;
    a->t.w = &a->w;
    a->t.result = -ETIMEDOUT;
    rt_fd *f = &fds[fd];
    int r = 0;
    rt__spin_lock(&f->lock);
    if (!f->registered) {
        r = -EBADF;
    } else {
        if ((events & RT_READ) && f->rd_ready) r |= RT_READ;
        if ((events & RT_WRITE) && f->wr_ready) r |= RT_WRITE;
        if (r & RT_READ) f->rd_ready = 0;
        if (r & RT_WRITE) f->wr_ready = 0;
    }
    if (r == 0) {
        if (((events & RT_READ) && f->rd) || ((events & RT_WRITE) && f->wr))
            r = -EBUSY;
        else if (a->timed && deadline <= rt_now_ns())
            r = -ETIMEDOUT;
        /* The timer is armed under the slot's lock (slot, then timer lock;
         * await_fire takes them one after the other), so that neither an
         * edge nor the deadline can fire a half-armed await. */
        else if (a->timed && rt__timer_try_add(&a->t) < 0)
            r = -ENOMEM;
        if (r == 0) {
            if (events & RT_READ) f->rd = &a->w;
            if (events & RT_WRITE) f->wr = &a->w;
        }
    }
    rt__spin_unlock(&f->lock);
    return r;
}

int rt_await_result(const rt_await *pub)
{
    return ((const rt__await *)pub)->result;
}

/* ------------------------------------------------------------------------ */
/* I/O                                                                       */

ssize_t rt_readv(int fd, const struct iovec *iov, int iovcnt, int64_t deadline)
{
    if (iovcnt > IOV_MAX)
        iovcnt = IOV_MAX;
    for (;;) {
        ssize_t r = sys_readv(fd, iov, iovcnt);
        if (r >= 0 || (r != -EAGAIN && r != -EINTR))
            return r;
        if (r == -EAGAIN && (r = rt_wait_fd(fd, RT_READ, deadline)) < 0)
            return r;
    }
}

ssize_t rt_writev(int fd, const struct iovec *iov, int iovcnt, int64_t deadline)
{
    size_t total = 0, done = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    int first = 0;        /* first iov not fully written */
    size_t skip = 0;      /* bytes of iov[first] already written */
    while (done < total) {
        struct iovec chunk[IOV_CHUNK];
        int c = 0;
        for (int i = first; i < iovcnt && c < IOV_CHUNK; i++) {
            size_t off = i == first ? skip : 0;
            if (iov[i].iov_len - off == 0)
                continue;
            chunk[c].iov_base = (char *)iov[i].iov_base + off;
            chunk[c].iov_len = iov[i].iov_len - off;
            c++;
        }
        ssize_t r = sys_writev(fd, chunk, c);
        if (r > 0) {
            size_t left = (size_t)r;
            done += left;
            while (left > 0) {
                size_t avail = iov[first].iov_len - skip;
                if (left >= avail) {
                    left -= avail;
                    first++;
                    skip = 0;
                } else {
                    skip += left;
                    left = 0;
                }
            }
            continue;
        }
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN)
            return r < 0 ? r : -EIO;
        if ((r = rt_wait_fd(fd, RT_WRITE, deadline)) < 0)
            return r;
    }
    return (ssize_t)total;
}

ssize_t rt_read(int fd, void *buf, size_t n, int64_t deadline)
{
    struct iovec iov = {buf, n};
    return rt_readv(fd, &iov, 1, deadline);
}

ssize_t rt_write(int fd, const void *buf, size_t n, int64_t deadline)
{
    struct iovec iov = {(void *)buf, n};
    return rt_writev(fd, &iov, 1, deadline);
}

int rt_accept(int lfd, struct sockaddr *addr, socklen_t *len, int64_t deadline)
{
    for (;;) {
        int fd = sys_accept(lfd, addr, len);
        if (fd >= 0) {
            int rc = do_register(fd, 1);
            if (rc < 0) {
                close(fd);
                return rc;
            }
            return fd;
        }
        if (fd == -EINTR || fd == -ECONNABORTED)
            continue;
        if (fd != -EAGAIN)
            return fd;
        int r = rt_wait_fd(lfd, RT_READ, deadline);
        if (r < 0)
            return r;
    }
}

__attribute__((noinline)) static int sock_error(int fd)
{
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        return -errno;
    return -err;
}

int rt_connect(int fd, const struct sockaddr *addr, socklen_t len, int64_t deadline)
{
    int r = sys_connect(fd, addr, len);
    if (r == 0)
        return 0;
    if (r != -EINPROGRESS && r != -EINTR)
        return r;
    for (;;) {
        r = rt_wait_fd(fd, RT_WRITE, deadline);
        if (r < 0)
            return r;
        r = sock_error(fd);
        if (r != 0)
            return r;
        /* Writable with no error: connected (or a stale ready flag). */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
            return 0;
    }
}

static int make_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (port < 0 || port > 65535)
        return -EINVAL;
    if (!host || !*host)
        host = "0.0.0.0";
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return 0;
    }
    return -EINVAL;
}

__attribute__((noinline)) static int sys_socket(int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

__attribute__((noinline)) static int sys_bind_listen(int fd, const struct sockaddr *a,
                                                     socklen_t l, int backlog)
{
    if (bind(fd, a, l) < 0 || listen(fd, backlog) < 0)
        return -errno;
    return 0;
}

int rt_listen_tcp(const char *host, int port, int backlog, int reuseport)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = make_addr(host, port, &ss, &len);
    if (rc < 0)
        return rc;
    int fd = sys_socket(ss.ss_family);
    if (fd < 0)
        return fd;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if ((rc = sys_bind_listen(fd, (struct sockaddr *)&ss, len, backlog > 0 ? backlog : 511)) < 0 ||
        (rc = do_register(fd, 1)) < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

int rt_dial_tcp(const char *host, int port, int64_t deadline)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = make_addr(host, port, &ss, &len);
    if (rc < 0)
        return rc;
    int fd = sys_socket(ss.ss_family);
    if (fd < 0)
        return fd;
    if ((rc = do_register(fd, 1)) < 0) {
        close(fd);
        return rc;
    }
    if ((rc = rt_connect(fd, (struct sockaddr *)&ss, len, deadline)) < 0) {
        rt_close(fd);
        return rc;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int rt_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -EBADF;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EINVAL;
}
