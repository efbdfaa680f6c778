/*
 * rt_int.h: the runtime's internals, shared by the files of runtime/ only.
 *
 * Vocabulary. A worker is an OS thread that runs coroutines. Each worker has
 * a scheduler context (its thread's own stack) and switches either directly
 * from one coroutine to the next or through the scheduler context when it
 * has to look for work (inject queue, netpoll, timers, stealing, parking).
 *
 * Waking. Every park is paired with exactly one wake. A waiter (rt_waiter)
 * is a small record on the parked coroutine's stack; whoever claims it
 * first (the object that becomes ready, the timer of a deadline, shutdown
 * of an fd) completes it, the others find it claimed and skip it.
 *
 * Two kinds of waiter. A "locked" waiter (racy == 0) can only be claimed by
 * someone holding the lock it was published under, and the parking
 * coroutine keeps that lock until it has switched out (the next context
 * releases it, as Go's gopark unlock function does). Its claim is a plain
 * store and its wake a plain enqueue: no read-modify-write at all. A
 * "racy" waiter (racy == 1: a deadline timer, a joiner, the blocking pool)
 * may be claimed by a party that holds no common lock, possibly before the
 * coroutine has switched out: claims use a CAS and the coroutine's pstate
 * word resolves the wake-before-switched-out race (see rt__ready()).
 */
#ifndef CACHESVC_RT_INT_H
#define CACHESVC_RT_INT_H

#include "runtime/rt.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(RT_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(RT_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

#define RT_RUNQ_SIZE 256u
#define RT_LIFO_MAX 16          /* consecutive runnext picks before the ring */
#define RT_FAIR_TICKS 61        /* schedule ticks between global checks */
#define RT_PAGE 4096u

#define RT_LIKELY(x) __builtin_expect(!!(x), 1)
#define RT_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define RT_RELAXED memory_order_relaxed
#define RT_ACQUIRE memory_order_acquire
#define RT_RELEASE memory_order_release
#define RT_SEQ memory_order_seq_cst

/* A full fence, for Dekker-style handshakes (one side stores A then loads
 * B, the other stores B then loads A): both sides need it between their
 * store and their load; acquire/release alone let each load pass the
 * store before it. TSan does not model fences (GCC rejects them under
 * -fsanitize=thread): there a seq_cst read-modify-write of one shared word
 * stands in, which orders the two sides the same way. */
#if defined(RT_TSAN)
extern atomic_int rt__fence_word;
#define rt__fence_seq() ((void)atomic_fetch_add(&rt__fence_word, 0))
#else
#define rt__fence_seq() atomic_thread_fence(memory_order_seq_cst)
#endif

/* Owner-written counters read by other threads without stopping the owner:
 * a relaxed load and store, no read-modify-write. */
#define RT_STAT_ADD(field, n) \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), RT_RELAXED) + (n), RT_RELAXED)

/* ------------------------------------------------------------------------ */
/* Spinlock for short critical sections (wait queues, timer heap, fd slots). */

typedef struct rt_spin { atomic_int v; } rt_spin;

static inline void rt__cpu_relax(void)
{
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static inline void rt__spin_lock(rt_spin *l)
{
    for (;;) {
        if (!atomic_exchange_explicit(&l->v, 1, RT_ACQUIRE))
            return;
        while (atomic_load_explicit(&l->v, RT_RELAXED))
            rt__cpu_relax();
    }
}
static inline void rt__spin_unlock(rt_spin *l)
{
    atomic_store_explicit(&l->v, 0, RT_RELEASE);
}

/* ------------------------------------------------------------------------ */
/* Coroutines                                                                */

enum { RT_P_RUNNING = 0, RT_P_PARKED = 1, RT_P_WOKEN = 2 };

typedef struct rt_worker rt_worker;

struct rt_co {
    void *sp;                 /* saved stack pointer while switched out */
    rt_worker *worker;        /* set by whoever switches into the coroutine */
    struct rt_co *next;       /* run queue, inject list, stack pool link */
    atomic_int pstate;        /* RT_P_*: resolves wake-before-switched-out */
    rt_fn fn;
    void *arg;
    void *local;              /* rt_co_local() */
    const char *name;
    uint64_t id;
    int joinable;
    /* Joining: 0 running, 1 done (stack idle, the joiner may free it),
     * 2 exiting (still switching off its stack), else the joiner's
     * rt_waiter*. A coroutine joiner publishes its waiter only after it has
     * switched out (RT_POST_JOIN), so the exiting coroutine may switch
     * straight to it. */
    atomic_uintptr_t join_word;
    int exit_how;             /* RT_EXIT_* chosen while exiting */
    /* Stack: the mapping is [guard page][stack ... rt_co], the struct sits
     * at the top of its own stack. */
    char *map_base;           /* start of the mapping (guard page first) */
    size_t map_size;
    size_t stack_size;        /* usable bytes below this struct */
    int guarded;
    int pool_class;           /* 1 = default size, pooled; 0 = unpooled */
    int cold;                 /* in the global pool, pages given back */
    struct rt_co *all_prev, *all_next; /* every stack mapped by the runtime */
#if defined(RT_ASAN)
    void *asan_fake;
#endif
#if defined(RT_TSAN)
    void *tsan_fiber;
    unsigned tsan_uses;
#endif
    unsigned vg_id;           /* valgrind stack id */
};

/* A parked thread of control: a coroutine (co != NULL) or a foreign OS
 * thread (co == NULL, it sleeps on the futex word). Lives on the waiter's
 * stack; nobody touches it after completing it. A waiter with neither (an
 * armed rt_fd_await) has fire set, which its completion calls instead. */
typedef struct rt_waiter {
    rt_co *co;
    atomic_int claimed;
    atomic_int futex;         /* foreign threads only */
    int result;
    int racy;                 /* see "Two kinds of waiter" above */
    int linked;               /* in a wait queue (protected by its lock) */
    struct rt_waiter *prev, *next;
    void *data;               /* channel element pointer, etc. */
    void (*fire)(struct rt_waiter *w); /* co == NULL, no thread: called
                                        * with result set, once claimed */
} rt_waiter;

static inline void rt__waiter_init(rt_waiter *w, rt_co *co)
{
    w->co = co;
    atomic_init(&w->claimed, 0);
    atomic_init(&w->futex, 0);
    w->result = 0;
    w->racy = 1;
    w->linked = 0;
    w->prev = w->next = NULL;
    w->data = NULL;
    w->fire = NULL;
}
/* Claims w; returns true exactly once. The claimer must then call
 * rt__waiter_complete(). */
static inline bool rt__waiter_claim(rt_waiter *w)
{
    if (!w->racy) {
        /* Every claimer holds the lock w was published under. */
        if (atomic_load_explicit(&w->claimed, RT_RELAXED))
            return false;
        atomic_store_explicit(&w->claimed, 1, RT_RELAXED);
        return true;
    }
    int exp = 0;
    return atomic_compare_exchange_strong_explicit(&w->claimed, &exp, 1, memory_order_acq_rel, RT_ACQUIRE);
}
static inline void rt__waiter_complete(rt_waiter *w, int result);
/* Claims and completes; returns whether this call did it. */
static inline bool rt__waiter_fire(rt_waiter *w, int result)
{
    if (!rt__waiter_claim(w))
        return false;
    rt__waiter_complete(w, result);
    return true;
}
/* Parks the caller (a coroutine, or a foreign thread when w->co is NULL)
 * until the racy waiter w has been completed; returns w->result. */
int rt__waiter_wait(rt_waiter *w);
/* Parks the running coroutine on the locked waiter w (racy == 0) that it
 * published under l, which it holds: l is released once the coroutine has
 * switched out. Returns w->result. */
int rt__waiter_wait_unlock(rt_waiter *w, rt_spin *l);

/* Doubly linked FIFO of waiters, protected by the owner's spinlock. */
typedef struct rt_waitq { rt_waiter *head, *tail; } rt_waitq;

static inline void rt__waitq_push(rt_waitq *q, rt_waiter *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail) q->tail->next = w; else q->head = w;
    q->tail = w;
    w->linked = 1;
}
static inline void rt__waitq_remove(rt_waitq *q, rt_waiter *w)
{
    if (!w->linked) return;
    if (w->prev) w->prev->next = w->next; else q->head = w->next;
    if (w->next) w->next->prev = w->prev; else q->tail = w->prev;
    w->prev = w->next = NULL;
    w->linked = 0;
}
static inline rt_waiter *rt__waitq_pop(rt_waitq *q)
{
    rt_waiter *w = q->head;
    if (w) {
        rt_waiter *n = w->next;
        q->head = n;
        if (n) n->prev = NULL; else q->tail = NULL;
        w->next = NULL;
        w->linked = 0;
    }
    return w;
}

/* ------------------------------------------------------------------------ */
/* Workers                                                                   */

enum { RT_POST_NONE, RT_POST_PARK, RT_POST_PARK_UNLOCK, RT_POST_PARKED, RT_POST_YIELD,
       RT_POST_EXIT, RT_POST_JOIN };
enum { RT_EXIT_DETACHED, RT_EXIT_DIRECT, RT_EXIT_MARKED, RT_EXIT_WAITER };

struct rt_worker {
    int index;
    pthread_t thread;
    /* Local run queue: a ring owned by this worker. head is advanced by the
     * owner and by thieves (CAS); tail only by the owner. */
    _Alignas(64) atomic_uint head;
    _Alignas(64) atomic_uint tail;
    _Atomic(rt_co *) ring[RT_RUNQ_SIZE];
    rt_co *runnext;           /* LIFO slot, owner only */
    int lifo_run;             /* consecutive runnext picks */
    uint32_t tick;
    uint32_t rand;
    int searching;            /* counted in rt->nsearching */
    /* Scheduler context. */
    void *sched_sp;
    rt_co *cur;               /* running coroutine, NULL in the scheduler */
    int post_op;
    rt_co *post_co;
    rt_spin *post_unlock;
    rt_co *post_child;        /* RT_POST_JOIN: the coroutine joined */
    rt_waiter *post_waiter;   /* RT_POST_JOIN: the joiner's waiter */
#if defined(RT_ASAN)
    const void *asan_stack_bottom;
    size_t asan_stack_size;
    void *asan_fake;
#endif
#if defined(RT_TSAN)
    void *tsan_fiber;
#endif
    /* Idle parking: wake_pending is the futex word, set under idle_lock. */
    _Alignas(64) atomic_int wake_pending;
    int idle;                 /* in the idle list (under idle_lock) */
    int polling;              /* idle and blocked in epoll_wait */
    rt_worker *idle_next;
    /* Stack pool of default-size stacks. */
    rt_co *pool;
    _Atomic size_t pool_len;
    uint64_t id_next, id_end; /* block of coroutine ids */
    /* Monitor snapshot of the running coroutine (relaxed); st_switches
     * is its tick. */
    _Atomic uint64_t mon_id;
    _Atomic(rt_fn) mon_fn;
    _Atomic(const char *) mon_name;
    _Atomic int mon_busy;
    /* Counters (owner writes, anyone reads). */
    _Atomic uint64_t st_spawns, st_exits, st_switches, st_steals, st_stolen,
        st_parks, st_polls;
    void *altstack;
};

typedef struct rt_runtime {
    rt_config cfg;
    int nworkers;
    rt_worker *workers;
    atomic_int running;       /* rt_running() */
    atomic_int stopping;
    /* Inject queue. */
    pthread_mutex_t inject_lock;
    rt_co *inject_head, *inject_tail;
    atomic_size_t inject_len;
    /* Coroutines a blocking-pool thread finished a call for (under
     * inject_lock): they run ahead of every queue (rt__inject_urgent). */
    rt_co *urgent_head, *urgent_tail;
    atomic_size_t urgent_len;
    /* Idle workers. */
    pthread_mutex_t idle_lock;
    rt_worker *idle_list;
    atomic_int nidle;
    atomic_int nsearching;
    /* Foreign threads inside a wake (shutdown waits for zero). */
    atomic_int foreign_inflight;
    /* Foreign joiners, woken with -ECANCELED on shutdown. */
    rt_spin foreign_lock;
    rt_waitq foreign_waiters;
    /* Stacks. */
    pthread_mutex_t stack_lock;
    rt_co *all_stacks;
    size_t guarded_stacks, guard_budget;
    rt_co *global_pool;       /* default stacks freed by foreign threads */
    size_t global_pool_len;
    size_t page_size, default_map;
    atomic_uint_fast64_t id_counter;
    atomic_size_t pooled;
    /* Monitor. */
    pthread_t monitor;
    pthread_mutex_t mon_lock;
    pthread_cond_t mon_cond;
    int mon_stop;
    atomic_uint_fast64_t hogs;
} rt_runtime;

extern rt_runtime rt__rt;

/* The worker running the calling thread, NULL on foreign threads. Read
 * through a noinline function so that no caller caches a TLS address across
 * a switch (rt.h, the rule). */
rt_worker *rt__cur_worker(void);

/* Makes a coroutine parked on a racy waiter runnable. Safe from any
 * thread. */
void rt__ready(rt_co *co);
/* Owner only: old was displaced from w's LIFO slot; it goes to the ring
 * and an idle worker is woken for it. */
void rt__runnext_displaced(rt_worker *w, rt_co *old);
/* rt__waiter_complete() for racy and foreign-thread waiters, or when
 * called off a worker. */
void rt__waiter_complete_slow(rt_waiter *w, int result);
/* Completes a claimed waiter: the waiter's coroutine becomes runnable (a
 * locked waiter completed on a worker goes straight to its LIFO slot, with
 * no read-modify-write), or its foreign thread is woken. */
static inline void rt__waiter_complete(rt_waiter *w, int result)
{
    rt_worker *me;
    if (RT_LIKELY(w->co && !w->racy) && (me = rt__cur_worker())) {
        rt_co *co = w->co, *old = me->runnext;
        w->result = result;
        me->runnext = co;
        if (old)
            rt__runnext_displaced(me, old);
        return;
    }
    rt__waiter_complete_slow(w, result);
}

/* Makes a coroutine runnable that is known to be switched out (it parked
 * on a locked waiter the caller claimed). Safe from any thread. */
void rt__ready_parked(rt_co *co);
/* Parks the running coroutine until rt__ready(). */
void rt__park(void);
/* Wakes an idle worker when there is work for it and nobody searching. */
void rt__wakep(void);
/* Enqueues a batch (linked by ->next) on the inject queue. */
void rt__inject(rt_co *head, rt_co *tail, size_t n);

/* Stacks (stack.c). */
int rt__stacks_init(void);
void rt__stacks_fini(void);
rt_co *rt__stack_alloc_slow(rt_worker *w, size_t stack_size);
void rt__stack_free_slow(rt_worker *w, rt_co *co);
/* Returns a coroutine struct with its stack (only the stack fields are
 * meaningful), or NULL when out of memory. The default size comes from
 * w's pool without a lock or an atomic read-modify-write. */
static inline rt_co *rt__stack_alloc(rt_worker *w, size_t stack_size)
{
#if !defined(RT_ASAN)   /* ASan unpoisons a reused stack (stack.c) */
    rt_co *co;
    if (w && (co = w->pool) && (stack_size == 0 || stack_size == rt__rt.cfg.stack_size)) {
        w->pool = co->next;
        RT_STAT_ADD(w->pool_len, -1);
        return co;
    }
#endif
    return rt__stack_alloc_slow(w, stack_size);
}
/* Gives co's stack back: to w's pool (or the global one from a foreign
 * thread) when it has the default size and the pool has room, else to the
 * OS. co must not be running. */
static inline void rt__stack_free(rt_worker *w, rt_co *co)
{
    if (w && co->pool_class &&
        atomic_load_explicit(&w->pool_len, RT_RELAXED) < rt__rt.cfg.stack_pool_max) {
        co->next = w->pool;
        w->pool = co;
        RT_STAT_ADD(w->pool_len, 1);
        return;
    }
    rt__stack_free_slow(w, co);
}
void rt__stack_release_all(void);
/* Gives the touched pages of the global pool's stacks past the first
 * stack_pool_max / 4 back to the kernel (madvise), so that RSS falls after
 * a burst of coroutines ends. The monitor calls it about once a second. */
void rt__stack_trim(void);
int rt__altstack_init(rt_worker *w);
void rt__segv_install(void);
void rt__altstack_fini(rt_worker *w);
void rt__co_prepare(rt_co *co, void (*entry)(rt_co *));
/* Context switch (switch_<arch>.S): saves callee-saved state on the current
 * stack, stores the stack pointer in *save and resumes the context whose
 * stack pointer is to. */
void rt__switch(void **save, void *to);

/* Timers (timer.c). */
typedef struct rt_timer {
    int64_t when;
    int idx;                  /* heap index, -1 when not armed */
    rt_waiter *w;
    int result;               /* the waiter's result when the timer fires */
} rt_timer;
int rt__timers_init(void);
void rt__timers_fini(void);
void rt__timer_add(rt_timer *t);
/* Arms t; -ENOMEM (t not armed, its waiter untouched) when the heap
 * cannot grow. */
int rt__timer_try_add(rt_timer *t);
void rt__timer_del(rt_timer *t);
int64_t rt__timers_next(void);          /* INT64_MAX if none */
/* The idle poller announces that it blocks until the returned time (the
 * nearest timer); a timer added earlier than that breaks the poll. */
int64_t rt__timers_poll_begin(void);
void rt__timers_poll_end(void);
int rt__timers_run(int64_t now);        /* fires due timers; count */
/* Parks on w (already published, racy) with an optional deadline;
 * -ETIMEDOUT if the deadline claimed w first. */
int rt__wait_deadline(rt_waiter *w, int64_t deadline);
/* Publishes w (initialised, not yet published) with push(q, w) under l,
 * which the caller holds, and parks until completed or the deadline.
 * Without a deadline w is a locked waiter and l is released after the
 * switch; with one, l is released before parking and a timed-out w unlinks
 * itself from q through unlink(q, w) under l. Returns the result. */
int rt__park_on(rt_spin *l, void *q, rt_waiter *w, int64_t deadline,
                void (*push)(void *q, rt_waiter *w), void (*unlink)(void *q, rt_waiter *w));

/* Netpoll (netpoll.c). */
int rt__netpoll_init(void);
void rt__netpoll_fini(void);
/* Polls the netpoll (the caller owns it). timeout_ns 0 = do not block;
 * < 0 = block until the nearest timer, as the idle worker w, which leaves
 * the idle list before readying anything. Returns coroutines readied. */
int rt__netpoll(int64_t timeout_ns, rt_worker *w);
void rt__netpoll_leave_idle(rt_worker *w);
void rt__netpoll_break(void);
bool rt__netpoll_try_own(void);
void rt__netpoll_release(void);
int rt__netpoll_owned(void);

/* Blocking pool (blocking.c). */
int rt__blocking_init(void);
void rt__blocking_fini(void);
uint64_t rt__blocking_calls(void);
uint64_t rt__blocking_threads(void);

/* Foreign threads (not workers) that touch waiters or queues bracket the
 * access with these; shutdown waits until none is inside. enter returns
 * false once the runtime is stopped, and the caller must then not touch
 * any coroutine or waiter. */
bool rt__foreign_enter(void);
void rt__foreign_exit(void);
/* Set on the blocking pool's threads: the coroutines they ready (a
 * finished rt_blocking call's) go to the urgent queue. */
void rt__foreign_urgent(void);
void rt__stack_check_unguarded(rt_co *co);
/* Reports an overflow of an unguarded stack (checked at every switch). */
static inline void rt__stack_check(rt_co *co)
{
    if (RT_UNLIKELY(!co->guarded))
        rt__stack_check_unguarded(co);
}
extern _Atomic int64_t rt__last_poll_ns;

/* Syscall wrappers that return -errno (util.c). */
int rt__futex_wait(atomic_int *addr, int val, int64_t timeout_ns);
int rt__futex_wake(atomic_int *addr, int n);
void rt__panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#endif /* CACHESVC_RT_INT_H */
