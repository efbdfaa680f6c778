/*
 * rt.h: the cachesvc runtime. M:N coroutines on work-stealing workers.
 *
 * This is the only runtime header other folders may include. Everything
 * here is callable from any coroutine; the few calls that are also callable
 * from an ordinary OS thread ("foreign thread") say so.
 *
 * Errors. Every call that can fail returns 0 (or a count) on success and a
 * negative errno value on failure: -ETIMEDOUT when a deadline passed,
 * -EAGAIN for "would block, try again" from the try_* variants, -EPIPE for a
 * closed channel, -ECANCELED when the runtime is shutting down or the fd was
 * closed under the caller, -ENOMEM. rt_strerror() names any of them.
 *
 * Deadlines are absolute times on the monotonic clock in nanoseconds, as
 * returned by rt_now_ns(). RT_NO_DEADLINE waits forever; rt_deadline_ms(ms)
 * builds one relative to now.
 *
 * Thread-local state and migration (the rule). A coroutine may resume on a
 * different worker thread after any call that can switch: every call in this
 * header except rt_now_*, rt_self, rt_co_id, rt_worker_id, rt_deadline_ms,
 * rt_strerror, the stats calls and the rt_*_new and rt_*_free calls. Compilers
 * cache the address of thread-local variables, errno included (glibc declares
 * __errno_location() const), across calls they believe cannot change threads.
 * Therefore:
 *   - never read errno or a __thread variable in a function that, after that
 *     read, calls a switching function and reads it again; capture errno into
 *     a local right after the failing call, inside a small noinline helper
 *     (the runtime's own syscall wrappers do this and return -errno);
 *   - never keep a pointer to a __thread variable across a switching call;
 *   - per-coroutine state belongs in the coroutine's own memory or in
 *     rt_co_local(), never in __thread variables.
 * The runtime's calls never leave a meaningful value in errno.
 */
#ifndef CACHESVC_RT_H
#define CACHESVC_RT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "kit/kit.h"

#include "runtime/rt_log.h"   /* rt_log: the one log stream of every module */

#ifdef __cplusplus
extern "C" {
#endif

#define RT_NO_DEADLINE INT64_MAX

typedef struct rt_co rt_co;         /* a coroutine */
typedef struct rt_mutex rt_mutex;
typedef struct rt_cond rt_cond;
typedef struct rt_chan rt_chan;
typedef struct rt_wg rt_wg;
typedef struct rt_sem rt_sem;
typedef struct rt_event rt_event;

typedef void (*rt_fn)(void *arg);

/* ------------------------------------------------------------------------ */
/* Runtime lifetime                                                          */

typedef struct rt_config {
    int workers;               /* worker threads; 0 = online CPUs */
    size_t stack_size;         /* default stack per coroutine; 0 = 64 KiB */
    int blocking_threads;      /* max threads for rt_blocking(); 0 = 64 */
    int hog_threshold_ms;      /* monitor reports a coroutine running this
                                * long without yielding; 0 = 100, -1 = off */
    size_t stack_pool_max;     /* pooled free stacks per worker before they
                                * move to the global pool; 0 = 64 */
    size_t stack_pool_global_max; /* free stacks kept in the global pool
                                * before they go back to the OS; 0 = 4096
                                * (their touched pages go back about once a
                                * second: a pooled stack holds address
                                * space, not memory) */
} rt_config;

/* Starts the runtime with cfg (NULL = all defaults), runs fn(arg) as the
 * first coroutine and returns when fn returns, after shutting the runtime
 * down: coroutines still parked on I/O, timers or sync objects are torn down
 * and their stacks freed without running further. Returns 0, or a negative
 * errno if the runtime could not start. One runtime per process at a time.
 * Call from an ordinary thread (typically main()). */
int rt_main(const rt_config *cfg, rt_fn fn, void *arg);

/* The same in two halves, for programs whose main thread does other work.
 * rt_start() returns once the workers run; rt_stop() shuts down as above. */
int rt_start(const rt_config *cfg);
void rt_stop(void);

/* True while a runtime is started. Callable from any thread. */
int rt_running(void);

/* ------------------------------------------------------------------------ */
/* Coroutines                                                                */

typedef struct rt_spawn_opts {
    size_t stack_size;   /* 0 = the runtime default; rounded up to pages */
    const char *name;    /* for reports; not copied, must outlive the co */
    int joinable;        /* nonzero: *out gets a handle that rt_join frees */
} rt_spawn_opts;

/* Spawns fn(arg) as a new coroutine. With out == NULL the coroutine is
 * detached and frees itself when fn returns; otherwise *out is a handle that
 * exactly one rt_join() must consume. Callable from coroutines and from
 * foreign threads (the coroutine then goes through the inject queue).
 * Returns 0 or -ENOMEM / -ECANCELED (runtime stopping). On failure fn is
 * never called. */
int rt_spawn(rt_co **out, rt_fn fn, void *arg);
int rt_spawn_ex(rt_co **out, rt_fn fn, void *arg, const rt_spawn_opts *opts);

/* Waits until co has returned and frees its handle. From a coroutine it
 * parks; from a foreign thread it blocks that thread. Returns 0, or
 * -ECANCELED if the runtime shut down first (the handle is then freed by
 * the shutdown). */
int rt_join(rt_co *co);

/* Lets other runnable coroutines run; the caller is queued behind them. */
void rt_yield(void);

/* Parks the caller for ms milliseconds (ns for rt_sleep_ns). Returns 0, or
 * -ECANCELED when the runtime is shutting down. */
int rt_sleep(int64_t ms);
int rt_sleep_ns(int64_t ns);

/* The running coroutine, or NULL on a foreign thread. */
rt_co *rt_self(void);
/* A process-unique id of co (never reused), for logs. */
uint64_t rt_co_id(const rt_co *co);
/* Index of the worker running the caller, 0..workers-1, or -1. */
int rt_worker_id(void);
/* Number of workers of the running runtime. */
int rt_workers(void);
/* One pointer of coroutine-local storage, NULL at spawn. */
void **rt_co_local(void);

/* Monotonic clock. */
int64_t rt_now_ns(void);
int64_t rt_now_ms(void);
int64_t rt_deadline_ms(int64_t ms);   /* now + ms; ms < 0 = RT_NO_DEADLINE */

const char *rt_strerror(int err);      /* err is negative errno */

/* ------------------------------------------------------------------------ */
/* Network I/O on the netpoll. A call that would block parks the coroutine  */
/* (never the worker) until the fd is ready or the deadline passes.          */

#define RT_READ  1
#define RT_WRITE 2

/* Makes fd non-blocking and registers it with the netpoll (once; edge-
 * triggered). Any fd the runtime did not create (a libpq or librdkafka
 * socket, an eventfd, a pipe) must be registered before the calls below.
 * Returns 0 or a negative errno. */
int rt_fd_register(int fd);
/* Deregisters fd without closing it (for fds owned by a library, e.g.
 * before PQfinish). Coroutines parked on it wake with -ECANCELED. */
int rt_fd_unregister(int fd);
/* Deregisters and closes fd; parked coroutines wake with -ECANCELED. */
int rt_close(int fd);

/* Parks until fd is readable (RT_READ) and/or writable (RT_WRITE) or the
 * deadline passes. Returns the ready subset (> 0), -ETIMEDOUT or
 * -ECANCELED. One reader and one writer may wait on an fd at the same time
 * (a second waiter for the same direction gets -EBUSY). */
int rt_wait_fd(int fd, int events, int64_t deadline);

/* Waiting without a coroutine. rt_fd_await() starts fn(arg) as a new
 * detached coroutine (rt_spawn_ex with opts: its stack_size and name; NULL
 * = defaults) once fd is ready for events, once the deadline passes, or
 * once fd is unregistered or closed; until then nothing waits but the
 * caller's rt_await and the fd's netpoll slot: no coroutine, no stack. It
 * is how a server keeps thousands of idle connections at the cost of a
 * small struct each.
 *
 * Returns 0 when armed: fn is then called exactly once, on some worker,
 * possibly before rt_fd_await() has returned, and inside it
 * rt_await_result(a) tells why: the ready subset of events (> 0),
 * -ETIMEDOUT or -ECANCELED (fd unregistered or closed). The caller must
 * not touch a, nor anything fn owns, from the moment it is armed. If the
 * runtime stops first, fn is never called (as coroutines parked on I/O are
 * torn down). Returns the ready subset (> 0) when an edge that arrived
 * while nobody waited is pending: nothing is armed and the caller goes on
 * itself. Otherwise fn is never called: -ETIMEDOUT (the deadline passed),
 * -EBUSY (someone waits on that direction), -EBADF (fd not registered),
 * -EINVAL, -ENOMEM, -ECANCELED (the runtime is stopping). Never switches;
 * callable from coroutines and foreign threads. */
typedef struct rt_await { _Alignas(16) unsigned char opaque[160]; } rt_await;
int rt_fd_await(rt_await *a, int fd, int events, int64_t deadline, rt_fn fn, void *arg,
                const rt_spawn_opts *opts);
int rt_await_result(const rt_await *a);

/* Reads up to n bytes: returns > 0 bytes read, 0 at end of file, or a
 * negative errno (-ETIMEDOUT, -ECONNRESET, ...). */
ssize_t rt_read(int fd, void *buf, size_t n, int64_t deadline);
ssize_t rt_readv(int fd, const struct iovec *iov, int iovcnt, int64_t deadline);
/* Writes all n bytes: returns n, or a negative errno; after an error the
 * amount written is unknown and the connection should be closed. */
ssize_t rt_write(int fd, const void *buf, size_t n, int64_t deadline);
ssize_t rt_writev(int fd, const struct iovec *iov, int iovcnt, int64_t deadline);

/* Accepts a connection on a listening fd that was registered; returns a new
 * registered non-blocking fd or a negative errno. */
int rt_accept(int lfd, struct sockaddr *addr, socklen_t *len, int64_t deadline);
/* Connects a registered socket; returns 0 or a negative errno. */
int rt_connect(int fd, const struct sockaddr *addr, socklen_t len, int64_t deadline);

/* Conveniences for TCP on numeric addresses ("127.0.0.1", "::1").
 * rt_listen_tcp returns a registered listening fd (SO_REUSEADDR, and
 * SO_REUSEPORT when reuseport is set); port 0 picks one, which
 * rt_local_port() tells. rt_dial_tcp returns a connected registered fd with
 * TCP_NODELAY set. Both return a negative errno on failure. */
int rt_listen_tcp(const char *host, int port, int backlog, int reuseport);
int rt_dial_tcp(const char *host, int port, int64_t deadline);
int rt_local_port(int fd);

/* ------------------------------------------------------------------------ */
/* Synchronisation. Objects are created and freed by their owner; freeing  */
/* one that has waiters is a bug. All waits park the coroutine.             */

rt_mutex *rt_mutex_new(void);
void rt_mutex_free(rt_mutex *m);
void rt_mutex_lock(rt_mutex *m);
int rt_mutex_trylock(rt_mutex *m);          /* 0 or -EAGAIN */
void rt_mutex_unlock(rt_mutex *m);

rt_cond *rt_cond_new(void);
void rt_cond_free(rt_cond *c);
/* Atomically unlocks m and parks; relocks m before returning. Returns 0 or
 * -ETIMEDOUT (m is relocked either way). Spurious wakeups are allowed. */
int rt_cond_wait(rt_cond *c, rt_mutex *m, int64_t deadline);
void rt_cond_signal(rt_cond *c);
void rt_cond_broadcast(rt_cond *c);

/* Bounded MPMC channel of fixed-size elements; capacity >= 1. */
rt_chan *rt_chan_new(size_t elem_size, size_t capacity);
void rt_chan_free(rt_chan *ch);
/* Copies *elem in. Returns 0, -EPIPE if closed, -ETIMEDOUT. */
int rt_chan_send(rt_chan *ch, const void *elem, int64_t deadline);
int rt_chan_try_send(rt_chan *ch, const void *elem);   /* or -EAGAIN */
/* Copies an element out. Returns 0, -EPIPE once closed and drained,
 * -ETIMEDOUT. */
int rt_chan_recv(rt_chan *ch, void *elem, int64_t deadline);
int rt_chan_try_recv(rt_chan *ch, void *elem);         /* or -EAGAIN */
/* Closes the channel: every parked sender and receiver wakes. */
void rt_chan_close(rt_chan *ch);
size_t rt_chan_len(rt_chan *ch);

rt_wg *rt_wg_new(void);
void rt_wg_free(rt_wg *wg);
void rt_wg_add(rt_wg *wg, int64_t n);
void rt_wg_done(rt_wg *wg);
int rt_wg_wait(rt_wg *wg, int64_t deadline);           /* 0 or -ETIMEDOUT */

rt_sem *rt_sem_new(int64_t count);
void rt_sem_free(rt_sem *s);
int rt_sem_acquire(rt_sem *s, int64_t deadline);       /* 0 or -ETIMEDOUT */
int rt_sem_try_acquire(rt_sem *s);                      /* 0 or -EAGAIN */
void rt_sem_release(rt_sem *s);

/* An auto-reset event that any thread may signal, runtime or foreign (for
 * library callbacks: librdkafka, libpq notice processors). Signals before a
 * wait are remembered (at most one). rt_event_wait is for coroutines and
 * returns 0 or -ETIMEDOUT. */
rt_event *rt_event_new(void);
void rt_event_free(rt_event *ev);
void rt_event_signal(rt_event *ev);
int rt_event_wait(rt_event *ev, int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Blocking offload                                                          */

/* Runs fn(arg) on the runtime's pool of OS threads while the calling
 * coroutine parks, and returns what fn returned. For calls that block the
 * thread (SQLite, getaddrinfo, fsync). fn must not call switching runtime
 * functions. Callable from coroutines only. */
intptr_t rt_blocking(intptr_t (*fn)(void *arg), void *arg);

/* ------------------------------------------------------------------------ */
/* Introspection for metrics. Counters are monotonic except the gauges.     */

/* A worker's counters (monotonic) and gauges, declared once in the form
 * X(name, help) of the metrics kit (kit/metrics.h). */
#define RT_WORKER_COUNTERS(X)                                                 \
    X(spawns, "Coroutines spawned by the worker")                             \
    X(switches, "Context switches into coroutines")                           \
    X(steals, "Successful steals by the worker")                              \
    X(stolen_tasks, "Coroutines moved by those steals")                       \
    X(parks, "Times the worker went idle")                                    \
    X(polls, "Netpoll calls by the worker")
#define RT_WORKER_GAUGES(X) X(runq_depth, "Coroutines in the worker's local queue")

typedef struct rt_worker_stats {
    RT_WORKER_COUNTERS(KIT_FIELD)
    RT_WORKER_GAUGES(KIT_FIELD)
} rt_worker_stats;

typedef struct rt_stats {
    uint64_t live;          /* gauge: coroutines alive */
    uint64_t hogs;          /* monitor reports of coroutines not yielding */
    uint64_t blocking_calls;
    uint64_t blocking_threads; /* gauge */
    uint64_t stacks_pooled; /* gauge */
    uint64_t inject_depth;  /* gauge */
} rt_stats;

/* Fills the stats of worker w (0..rt_workers()-1). Returns 0 or -EINVAL.
 * Callable from any thread; values are read without stopping workers. */
int rt_worker_stats_get(int w, rt_worker_stats *out);
void rt_stats_get(rt_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_RT_H */
