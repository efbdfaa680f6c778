/*
 * sched.c: workers, run queues, spawn/join/yield/park, start and shutdown.
 *
 * Each worker owns a 256-slot ring (Go's runq: the owner pushes at the tail,
 * the owner and thieves take from the head with a CAS) and a LIFO slot
 * (runnext) that only the owner touches. A coroutine made ready on a worker
 * goes to runnext, so a sender and the receiver it wakes run back to back on
 * one worker without touching shared queues; the previous occupant of
 * runnext moves to the ring where idle workers can steal it. At most
 * RT_LIFO_MAX consecutive picks come from runnext, so two coroutines that
 * keep waking each other cannot starve the ring.
 *
 * Overflow of a ring moves half of it to the global inject queue in one
 * batch; coroutines spawned or woken by foreign threads land there too. The
 * inject queue, timers and netpoll are checked every RT_FAIR_TICKS switches
 * and whenever a worker runs dry.
 *
 * A worker that runs dry becomes "searching" (at most about half the
 * workers at once) and steals half of a random victim's ring. A worker that
 * finds nothing parks: the first to park takes the netpoll and blocks in
 * epoll_wait until the nearest timer, the others sleep on a futex. Making
 * work available calls rt__wakep(), which wakes one idle worker when nobody
 * is searching; the searching worker that finds work wakes the next one
 * (Go's resetspinning), and a worker going idle re-checks every queue after
 * announcing itself idle, so no wakeup is lost.
 *
 * Switches go from coroutine to coroutine directly when the worker has
 * local work; what the previous coroutine asked for (park, yield, exit) is
 * done by whoever runs next, after the switch, when the previous stack is
 * no longer in use (post_switch()).
 */
#include "runtime/rt_int.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

rt_runtime rt__rt;
#if defined(RT_TSAN)
atomic_int rt__fence_word;
#endif
static __thread rt_worker *tls_worker;
static __thread int tls_urgent;   /* rt__foreign_urgent() */
static _Atomic uint64_t foreign_spawns;

/* See rt.h, "the rule": never let a caller cache this TLS read. */
__attribute__((noinline)) rt_worker *rt__cur_worker(void)
{
    rt_worker *w = tls_worker;
    __asm__ __volatile__("" : "+r"(w) : : "memory");
    return w;
}

bool rt__foreign_enter(void)
{
    atomic_fetch_add(&rt__rt.foreign_inflight, 1);
    if (!atomic_load(&rt__rt.running)) {
        atomic_fetch_sub(&rt__rt.foreign_inflight, 1);
        return false;
    }
    return true;
}

void rt__foreign_exit(void)
{
    atomic_fetch_sub(&rt__rt.foreign_inflight, 1);
}

void rt__foreign_urgent(void)
{
    tls_urgent = 1;
}

/* ------------------------------------------------------------------------ */
/* Run queues                                                                */

static inline rt_co *ring_load(rt_worker *w, uint32_t i)
{
    return atomic_load_explicit(&w->ring[i % RT_RUNQ_SIZE], RT_RELAXED);
}
static inline void ring_store(rt_worker *w, uint32_t i, rt_co *co)
{
    atomic_store_explicit(&w->ring[i % RT_RUNQ_SIZE], co, RT_RELAXED);
}

/* Moves half of a full ring plus co to the inject queue. Returns false if
 * a thief raced us (the caller retries the fast path). */
static bool runq_put_slow(rt_worker *w, rt_co *co, uint32_t h, uint32_t t)
{
    uint32_t n = (t - h) / 2;
    rt_co *batch[RT_RUNQ_SIZE / 2 + 1];
    for (uint32_t i = 0; i < n; i++)
        batch[i] = ring_load(w, h + i);
    if (!atomic_compare_exchange_strong_explicit(&w->head, &h, h + n,
                                                 memory_order_acq_rel, RT_RELAXED))
        return false;
    batch[n] = co;
    for (uint32_t i = 0; i < n; i++)
        batch[i]->next = batch[i + 1];
    co->next = NULL;
    rt__inject(batch[0], co, n + 1);
    return true;
}

/* Owner only: appends co to w's ring (or overflows to inject). */
static void runq_put(rt_worker *w, rt_co *co)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&w->head, RT_ACQUIRE);
        uint32_t t = atomic_load_explicit(&w->tail, RT_RELAXED);
        if (t - h < RT_RUNQ_SIZE) {
            ring_store(w, t, co);
            atomic_store_explicit(&w->tail, t + 1, RT_RELEASE);
            return;
        }
        if (runq_put_slow(w, co, h, t))
            return;
    }
}

/* Owner only: takes the oldest coroutine of w's ring. */
static rt_co *runq_get(rt_worker *w)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&w->head, RT_ACQUIRE);
        uint32_t t = atomic_load_explicit(&w->tail, RT_RELAXED);
        if (t == h)
            return NULL;
        rt_co *co = ring_load(w, h);
        if (atomic_compare_exchange_weak_explicit(&w->head, &h, h + 1,
                                                  memory_order_acq_rel, RT_RELAXED))
            return co;
    }
}

static inline uint32_t runq_len(rt_worker *w)
{
    uint32_t h = atomic_load_explicit(&w->head, RT_ACQUIRE);
    uint32_t t = atomic_load_explicit(&w->tail, RT_ACQUIRE);
    return t - h;
}

/* Steals half of victim's ring into thief's (empty) ring; returns one of
 * the stolen coroutines to run now, or NULL. */
static rt_co *runq_steal(rt_worker *thief, rt_worker *victim)
{
    uint32_t t = atomic_load_explicit(&thief->tail, RT_RELAXED);
    uint32_t n;
    for (;;) {
        uint32_t h = atomic_load_explicit(&victim->head, RT_ACQUIRE);
        uint32_t vt = atomic_load_explicit(&victim->tail, RT_ACQUIRE);
        n = vt - h;
        n = n - n / 2;
        if (n == 0)
            return NULL;
        if (n > RT_RUNQ_SIZE / 2)
            continue;   /* inconsistent snapshot */
        for (uint32_t i = 0; i < n; i++)
            ring_store(thief, t + i, ring_load(victim, h + i));
        if (atomic_compare_exchange_strong_explicit(&victim->head, &h, h + n,
                                                    memory_order_acq_rel, RT_RELAXED))
            break;
    }
    RT_STAT_ADD(thief->st_steals, 1);
    RT_STAT_ADD(thief->st_stolen, n);
    n--;
    rt_co *co = ring_load(thief, t + n);
    if (n)
        atomic_store_explicit(&thief->tail, t + n, RT_RELEASE);
    return co;
}

/* Appends head..tail (n coroutines) to one of the global queues (inject
 * or urgent: *qhead, *qtail, *qlen), under inject_lock. */
static void queue_append(rt_co **qhead, rt_co **qtail, atomic_size_t *qlen, rt_co *head,
                         rt_co *tail, size_t n)
{
    rt_runtime *rt = &rt__rt;
    tail->next = NULL;
    pthread_mutex_lock(&rt->inject_lock);
    if (*qtail) (*qtail)->next = head;
    else *qhead = head;
    *qtail = tail;
    atomic_fetch_add(qlen, n);
    pthread_mutex_unlock(&rt->inject_lock);
}

void rt__inject(rt_co *head, rt_co *tail, size_t n)
{
    rt_runtime *rt = &rt__rt;
    queue_append(&rt->inject_head, &rt->inject_tail, &rt->inject_len, head, tail, n);
}

/* Queues co ahead of everything ready: a coroutine whose blocking call
 * finished often holds what others wait for (a store batch's callers, an
 * item's next batch behind its row lock), and through the inject queue it
 * waited behind a worker's ring of ready connections until the next check
 * of the global queue (every RT_FAIR_TICKS switches: a few hundred
 * microseconds under load, per call). Every worker's fast path looks at
 * urgent_len. */
static void inject_urgent(rt_co *co)
{
    rt_runtime *rt = &rt__rt;
    queue_append(&rt->urgent_head, &rt->urgent_tail, &rt->urgent_len, co, co, 1);
}

static rt_co *urgent_get(void)
{
    rt_runtime *rt = &rt__rt;
    if (atomic_load_explicit(&rt->urgent_len, RT_RELAXED) == 0)
        return NULL;
    pthread_mutex_lock(&rt->inject_lock);
    rt_co *co = rt->urgent_head;
    if (co) {
        rt->urgent_head = co->next;
        if (!rt->urgent_head) rt->urgent_tail = NULL;
        atomic_fetch_sub(&rt->urgent_len, 1);
    }
    pthread_mutex_unlock(&rt->inject_lock);
    return co;
}

/* Takes a batch from the inject queue: returns one coroutine to run and
 * moves up to a fair share of the rest into w's ring. */
static rt_co *inject_get(rt_worker *w, bool single)
{
    rt_runtime *rt = &rt__rt;
    if (atomic_load_explicit(&rt->inject_len, RT_RELAXED) == 0)
        return NULL;
    pthread_mutex_lock(&rt->inject_lock);
    size_t len = atomic_load_explicit(&rt->inject_len, RT_RELAXED);
    if (len == 0) {
        pthread_mutex_unlock(&rt->inject_lock);
        return NULL;
    }
    size_t n = single ? 1 : len / (size_t)rt->nworkers + 1;
    size_t room = RT_RUNQ_SIZE / 2 - runq_len(w);
    if (n > len) n = len;
    if (n > room + 1) n = room + 1;
    rt_co *co = rt->inject_head;
    rt_co *p = co->next;
    for (size_t i = 1; i < n; i++) {
        rt_co *nx = p->next;
        runq_put(w, p);
        p = nx;
    }
    rt->inject_head = p;
    if (!p) rt->inject_tail = NULL;
    atomic_fetch_sub(&rt->inject_len, n);
    pthread_mutex_unlock(&rt->inject_lock);
    return co;
}

/* ------------------------------------------------------------------------ */
/* Idle workers                                                              */

static void wake_worker_locked(rt_worker *v, bool *polling)
{
    v->idle = 0;
    atomic_fetch_sub(&rt__rt.nidle, 1);
    *polling = v->polling;
    atomic_store(&v->wake_pending, 1);
}

void rt__wakep(void)
{
    rt_runtime *rt = &rt__rt;
    rt__fence_seq();
    if (atomic_load(&rt->nidle) == 0 || atomic_load(&rt->nsearching) != 0)
        return;
    int exp = 0;
    if (!atomic_compare_exchange_strong(&rt->nsearching, &exp, 1))
        return;
    rt_worker *v = NULL, **pp, **pick = NULL;
    bool polling = false;
    pthread_mutex_lock(&rt->idle_lock);
    for (pp = &rt->idle_list; *pp; pp = &(*pp)->idle_next) {
        pick = pp;
        if (!(*pp)->polling)
            break;
    }
    if (pick) {
        v = *pick;
        *pick = v->idle_next;
        v->searching = 1;
        wake_worker_locked(v, &polling);
    }
    pthread_mutex_unlock(&rt->idle_lock);
    if (!v) {
        atomic_fetch_sub(&rt->nsearching, 1);
        return;
    }
    if (polling)
        rt__netpoll_break();
    else
        rt__futex_wake(&v->wake_pending, 1);
}

/* Removes w from the idle list; if a waker already took it out, w starts
 * searching (the waker counted it). */
static void leave_idle(rt_worker *w)
{
    rt_runtime *rt = &rt__rt;
    pthread_mutex_lock(&rt->idle_lock);
    if (w->idle) {
        rt_worker **pp;
        for (pp = &rt->idle_list; *pp != w; pp = &(*pp)->idle_next)
            ;
        *pp = w->idle_next;
        w->idle = 0;
        atomic_fetch_sub(&rt->nidle, 1);
    }
    w->polling = 0;
    atomic_store(&w->wake_pending, 0);
    pthread_mutex_unlock(&rt->idle_lock);
}

static void stop_searching(rt_worker *w)
{
    if (!w->searching)
        return;
    w->searching = 0;
    if (atomic_fetch_sub(&rt__rt.nsearching, 1) == 1)
        rt__wakep();
}

/* Whether work is visible anywhere, self's own slots included (a worker
 * must never park with something runnable in them). */
static bool any_work(rt_worker *self)
{
    rt_runtime *rt = &rt__rt;
    if (self->runnext || atomic_load(&rt->inject_len) || atomic_load(&rt->urgent_len) ||
        atomic_load(&rt->stopping))
        return true;
    for (int i = 0; i < rt->nworkers; i++)
        if (runq_len(&rt->workers[i]))
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* Switching                                                                 */

static inline void note_run(rt_worker *w, rt_co *co)
{
    w->cur = co;
    co->worker = w;
    RT_STAT_ADD(w->st_switches, 1);
    atomic_store_explicit(&w->mon_id, co->id, RT_RELAXED);
    atomic_store_explicit(&w->mon_fn, co->fn, RT_RELAXED);
    atomic_store_explicit(&w->mon_name, co->name, RT_RELAXED);
}

/* Sanitizer bookkeeping around a switch. from/to NULL = scheduler. */
static inline void san_before(rt_worker *w, rt_co *from, rt_co *to, bool exiting)
{
#if defined(RT_ASAN)
    void **fake = exiting ? NULL : (from ? &from->asan_fake : &w->asan_fake);
    if (to)
        __sanitizer_start_switch_fiber(fake, (char *)to - to->stack_size, to->stack_size);
    else
        __sanitizer_start_switch_fiber(fake, w->asan_stack_bottom, w->asan_stack_size);
#endif
#if defined(RT_TSAN)
    __tsan_switch_to_fiber(to ? to->tsan_fiber : w->tsan_fiber, 0);
#endif
    (void)w; (void)from; (void)to; (void)exiting;
}

static inline void san_after(rt_worker *w, rt_co *self)
{
#if defined(RT_ASAN)
    __sanitizer_finish_switch_fiber(self ? self->asan_fake : w->asan_fake, NULL, NULL);
#endif
    (void)w; (void)self;
}

static void co_finish(rt_worker *w, rt_co *co);

/* Owner only: co runs next on w; a displaced runnext goes to the ring. */
static inline void ready_local(rt_worker *w, rt_co *co)
{
    rt_co *old = w->runnext;
    w->runnext = co;
    if (old)
        rt__runnext_displaced(w, old);
}

void rt__runnext_displaced(rt_worker *w, rt_co *old)
{
    runq_put(w, old);
    rt__wakep();
}

/* Runs the previous coroutine's request, now that its stack is idle. */
static inline void post_switch(rt_worker *w)
{
    int op = w->post_op;
    rt_co *co = w->post_co;
    if (op == RT_POST_NONE)
        return;
    w->post_op = RT_POST_NONE;
    w->post_co = NULL;
    switch (op) {
    case RT_POST_PARK: {
        rt__stack_check(co);
        int exp = RT_P_RUNNING;
        if (!atomic_compare_exchange_strong_explicit(&co->pstate, &exp, RT_P_PARKED,
                                                     memory_order_acq_rel, RT_ACQUIRE)) {
            /* Woken before it was switched out: it runs again. */
            atomic_store_explicit(&co->pstate, RT_P_RUNNING, RT_RELAXED);
            runq_put(w, co);
            rt__wakep();
        }
        break;
    }
    case RT_POST_PARK_UNLOCK:
        /* A locked waiter: publishing it could not wake anyone yet. */
        rt__stack_check(co);
        rt__spin_unlock(w->post_unlock);
        w->post_unlock = NULL;
        break;
    case RT_POST_PARKED:
        /* Parked on a waiter that only the coroutine switched to can
         * complete (rt_join() of a child taken from runnext). */
        rt__stack_check(co);
        break;
    case RT_POST_YIELD:
        /* No wakep: the yielder was this worker's work already. */
        rt__stack_check(co);
        runq_put(w, co);
        break;
    case RT_POST_EXIT:
        co_finish(w, co);
        break;
    case RT_POST_JOIN: {
        /* The joiner is switched out: publish its waiter, unless the child
         * is done already. */
        rt_co *child = w->post_child;
        uintptr_t jw = (uintptr_t)w->post_waiter;
        uintptr_t v = atomic_load_explicit(&child->join_word, RT_ACQUIRE);
        w->post_child = NULL;
        w->post_waiter = NULL;
        for (;;) {
            if (v == 1) {
                ready_local(w, co);
                break;
            }
            if (atomic_compare_exchange_weak_explicit(&child->join_word, &v, jw,
                                                      memory_order_acq_rel, RT_ACQUIRE))
                break;
        }
        break;
    }
    }
}

/* The next coroutine this worker can run without leaving the fast path,
 * or NULL to go through the scheduler (nothing local, fairness tick,
 * shutdown). */
static inline rt_co *local_next(rt_worker *w)
{
    rt_co *co;
    if (RT_UNLIKELY(++w->tick % RT_FAIR_TICKS == 0))
        return NULL;
    if (RT_UNLIKELY(atomic_load_explicit(&rt__rt.stopping, RT_RELAXED)))
        return NULL;
    if (RT_UNLIKELY(atomic_load_explicit(&rt__rt.urgent_len, RT_RELAXED) != 0))
        return NULL;
    if (w->runnext && w->lifo_run < RT_LIFO_MAX) {
        co = w->runnext;
        w->runnext = NULL;
        w->lifo_run++;
        return co;
    }
    w->lifo_run = 0;
    co = runq_get(w);
    if (!co && w->runnext) {
        co = w->runnext;
        w->runnext = NULL;
    }
    return co;
}

/* Takes co out of w's LIFO slot to switch to it directly, if it is there
 * and local_next() would have picked it now. */
static inline bool take_runnext(rt_worker *w, rt_co *co)
{
    if (w->runnext != co || w->lifo_run >= RT_LIFO_MAX ||
        (w->tick + 1) % RT_FAIR_TICKS == 0 ||
        atomic_load_explicit(&rt__rt.stopping, RT_RELAXED))
        return false;
    w->tick++;
    w->lifo_run++;
    w->runnext = NULL;
    return true;
}

/* Switches the running coroutine cur away with request op. Returns when
 * cur is resumed (never for RT_POST_EXIT), possibly on another worker. */
static void sched_switch_to(rt_worker *w, rt_co *cur, int op, rt_co *next)
{
    w->post_op = op;
    w->post_co = cur;
    if (!next)
        next = local_next(w);
    if (next) {
        san_before(w, cur, next, op == RT_POST_EXIT);
        note_run(w, next);
        rt__switch(&cur->sp, next->sp);
    } else {
        san_before(w, cur, NULL, op == RT_POST_EXIT);
        w->cur = NULL;
        rt__switch(&cur->sp, w->sched_sp);
    }
    /* Resumed: cur->worker is the worker that switched us in. */
    w = cur->worker;
    san_after(w, cur);
    post_switch(w);
}

static inline void sched_switch(rt_worker *w, rt_co *cur, int op)
{
    sched_switch_to(w, cur, op, NULL);
}

void rt__park(void)
{
    rt_worker *w = rt__cur_worker();
    sched_switch(w, w->cur, RT_POST_PARK);
}

static inline void enqueue_ready(rt_co *co)
{
    rt_worker *w = rt__cur_worker();
    if (w) {
        ready_local(w, co);
    } else if (rt__foreign_enter()) {
        if (tls_urgent)
            inject_urgent(co);
        else
            rt__inject(co, co, 1);
        rt__wakep();
        rt__foreign_exit();
    }
}

void rt__ready_parked(rt_co *co)
{
    enqueue_ready(co);
}

void rt__ready(rt_co *co)
{
    for (;;) {
        int s = atomic_load_explicit(&co->pstate, RT_ACQUIRE);
        if (s == RT_P_PARKED) {
            if (atomic_compare_exchange_weak_explicit(&co->pstate, &s, RT_P_RUNNING,
                                                      memory_order_acq_rel, RT_ACQUIRE))
                break;
        } else if (s == RT_P_RUNNING) {
            /* Still switching out: its post_switch() will queue it. */
            if (atomic_compare_exchange_weak_explicit(&co->pstate, &s, RT_P_WOKEN,
                                                      memory_order_acq_rel, RT_ACQUIRE))
                return;
        } else {
            rt__panic("rt: coroutine %llu woken twice\n", (unsigned long long)co->id);
        }
    }
    enqueue_ready(co);
}

void rt__waiter_complete_slow(rt_waiter *w, int result)
{
    w->result = result;
    if (w->co) {
        if (w->racy)
            rt__ready(w->co);
        else
            rt__ready_parked(w->co);
    } else if (w->fire) {
        w->fire(w);
    } else {
        atomic_store_explicit(&w->futex, 1, RT_RELEASE);
        rt__futex_wake(&w->futex, 1);
    }
}

int rt__waiter_wait_unlock(rt_waiter *w, rt_spin *l)
{
    /* w->co is the running coroutine: its worker is ours (no TLS read). */
    rt_worker *me = w->co->worker;
    me->post_unlock = l;
    sched_switch(me, w->co, RT_POST_PARK_UNLOCK);
    return w->result;
}

int rt__waiter_wait(rt_waiter *w)
{
    if (w->co) {
        rt__park();
    } else {
        while (!atomic_load_explicit(&w->futex, RT_ACQUIRE))
            rt__futex_wait(&w->futex, 0, -1);
    }
    return w->result;
}

/* ------------------------------------------------------------------------ */
/* Coroutine lifetime                                                        */

static void co_entry(rt_co *co)
{
    rt_worker *w = co->worker;
#if defined(RT_ASAN)
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    post_switch(w);
    co->fn(co->arg);
    w = co->worker;
    /* A parked coroutine joiner is resumed directly; otherwise mark the
     * exit so that a joiner arriving now waits for co_finish(). */
    rt_co *direct = NULL;
    co->exit_how = RT_EXIT_DETACHED;
    if (co->joinable) {
        uintptr_t v = atomic_load_explicit(&co->join_word, RT_ACQUIRE);
        for (;;) {
            if (v > 2) {
                rt_waiter *jw = (rt_waiter *)v;
                if (jw->co) {
                    jw->result = 0;
                    direct = jw->co;
                    co->exit_how = RT_EXIT_DIRECT;
                } else {
                    co->exit_how = RT_EXIT_WAITER;
                }
                break;
            }
            if (atomic_compare_exchange_weak_explicit(&co->join_word, &v, 2,
                                                      memory_order_acq_rel, RT_ACQUIRE)) {
                co->exit_how = RT_EXIT_MARKED;
                break;
            }
        }
    }
    sched_switch_to(w, co, RT_POST_EXIT, direct);
    rt__panic("rt: exited coroutine resumed\n");
}

/* Called once co's stack is no longer in use: frees a detached coroutine,
 * or tells the joiner. */
static void co_finish(rt_worker *w, rt_co *co)
{
    RT_STAT_ADD(w->st_exits, 1);
    rt__stack_check(co);
    if (!co->joinable) {
        rt__stack_free(w, co);
        return;
    }
    if (co->exit_how == RT_EXIT_DIRECT)
        return;   /* the joiner runs now and frees co */
    uintptr_t v = 2;
    if (co->exit_how == RT_EXIT_MARKED &&
        atomic_compare_exchange_strong_explicit(&co->join_word, &v, 1,
                                                memory_order_acq_rel, RT_ACQUIRE))
        return;
    /* A joiner published its waiter meanwhile (or was there already). */
    v = atomic_load_explicit(&co->join_word, RT_ACQUIRE);
    rt__waiter_fire((rt_waiter *)v, 0);
}

static uint64_t next_id(rt_worker *w)
{
    if (!w)
        return atomic_fetch_add(&rt__rt.id_counter, 1);
    if (w->id_next == w->id_end) {
        w->id_next = atomic_fetch_add(&rt__rt.id_counter, 1024);
        w->id_end = w->id_next + 1024;
    }
    return w->id_next++;
}

int rt_spawn_ex(rt_co **out, rt_fn fn, void *arg, const rt_spawn_opts *opts)
{
    rt_runtime *rt = &rt__rt;
    rt_worker *w = rt__cur_worker();
    int rc = 0;
    if (!w && !rt__foreign_enter())
        return -ECANCELED;
    if (atomic_load_explicit(&rt->stopping, RT_RELAXED)) {
        rc = -ECANCELED;
        goto out;
    }
    rt_co *co = rt__stack_alloc(w, opts ? opts->stack_size : 0);
    if (!co) {
        rc = -ENOMEM;
        goto out;
    }
    co->fn = fn;
    co->arg = arg;
    co->local = NULL;
    co->name = opts ? opts->name : NULL;
    co->joinable = out != NULL;
    co->next = NULL;
    atomic_store_explicit(&co->join_word, 0, RT_RELAXED);
    atomic_store_explicit(&co->pstate, RT_P_RUNNING, RT_RELAXED);
    co->id = next_id(w);
#if defined(RT_ASAN)
    co->asan_fake = NULL;
#endif
#if defined(RT_TSAN)
    /* A coroutine never returns from its entry frame, so TSan's shadow call
     * stack of a reused fiber grows with every coroutine run on it. */
    if (++co->tsan_uses >= 4096) {
        __tsan_destroy_fiber(co->tsan_fiber);
        co->tsan_fiber = __tsan_create_fiber(0);
        co->tsan_uses = 0;
    }
#endif
    rt__co_prepare(co, co_entry);
    if (out)
        *out = co;
    if (w) {
        RT_STAT_ADD(w->st_spawns, 1);
        ready_local(w, co);
        return 0;
    }
    atomic_fetch_add(&foreign_spawns, 1);
    rt__inject(co, co, 1);
    rt__wakep();
out:
    if (!w)
        rt__foreign_exit();
    return rc;
}

int rt_spawn(rt_co **out, rt_fn fn, void *arg)
{
    return rt_spawn_ex(out, fn, arg, NULL);
}

int rt_join(rt_co *co)
{
    rt_runtime *rt = &rt__rt;
    rt_worker *w = rt__cur_worker();
    rt_waiter wt;
    if (!co)
        return -EINVAL;
    if (!atomic_load(&rt->running))
        return -ECANCELED;
    if (w && w->cur) {
        if (atomic_load_explicit(&co->join_word, RT_ACQUIRE) != 1) {
            rt__waiter_init(&wt, w->cur);
            wt.racy = 0;
            if (take_runnext(w, co)) {
                /* co waits in our LIFO slot, which only we touch: it runs
                 * nowhere, so nobody else reads or writes its join word
                 * until we switch to it. Publish with a plain store and
                 * run it now; it switches straight back when it exits. */
                atomic_store_explicit(&co->join_word, (uintptr_t)&wt, RT_RELEASE);
                sched_switch_to(w, w->cur, RT_POST_PARKED, co);
            } else {
                /* Published by post_switch(), after we switched out. */
                w->post_child = co;
                w->post_waiter = &wt;
                sched_switch(w, w->cur, RT_POST_JOIN);
            }
        }
        rt__stack_free(rt__cur_worker(), co);
        return 0;
    }
    rt__waiter_init(&wt, NULL);
    {
        /* A foreign joiner is listed so that shutdown can cancel it. */
        rt__spin_lock(&rt->foreign_lock);
        if (atomic_load(&rt->stopping)) {
            rt__spin_unlock(&rt->foreign_lock);
            return -ECANCELED;
        }
        rt__waitq_push(&rt->foreign_waiters, &wt);
        rt__spin_unlock(&rt->foreign_lock);
    }
    uintptr_t v = atomic_load_explicit(&co->join_word, RT_ACQUIRE);
    int r = 0;
    while (v != 1) {
        if (atomic_compare_exchange_weak_explicit(&co->join_word, &v, (uintptr_t)&wt,
                                                  memory_order_acq_rel, RT_ACQUIRE)) {
            r = rt__waiter_wait(&wt);
            break;
        }
    }
    rt__spin_lock(&rt->foreign_lock);
    rt__waitq_remove(&rt->foreign_waiters, &wt);
    rt__spin_unlock(&rt->foreign_lock);
    if (r < 0)
        return r;
    if (!rt__foreign_enter())
        return -ECANCELED;
    rt__stack_free(NULL, co);
    rt__foreign_exit();
    return 0;
}

void rt_yield(void)
{
    rt_worker *w = rt__cur_worker();
    if (!w || !w->cur) {
        sched_yield();
        return;
    }
    sched_switch(w, w->cur, RT_POST_YIELD);
}

rt_co *rt_self(void)
{
    rt_worker *w = rt__cur_worker();
    return w ? w->cur : NULL;
}

uint64_t rt_co_id(const rt_co *co)
{
    return co ? co->id : 0;
}

int rt_worker_id(void)
{
    rt_worker *w = rt__cur_worker();
    return w ? w->index : -1;
}

int rt_workers(void)
{
    return rt__rt.nworkers;
}

void **rt_co_local(void)
{
    rt_co *co = rt_self();
    return co ? &co->local : NULL;
}

/* ------------------------------------------------------------------------ */
/* The scheduler loop                                                        */

/* Blocks until there is a coroutine for w to run; NULL on shutdown. */
static rt_co *find_runnable(rt_worker *w)
{
    rt_runtime *rt = &rt__rt;
    rt_co *co;
    for (;;) {
        if (atomic_load(&rt->stopping))
            return NULL;
        bool fair = w->tick % RT_FAIR_TICKS == 0;
        w->tick++;
        int64_t now = rt_now_ns();
        if (now >= rt__timers_next())
            rt__timers_run(now);
        if ((co = urgent_get()))
            return co;
        if (fair) {
            if ((co = inject_get(w, true)))
                return co;
            if (now - atomic_load_explicit(&rt__last_poll_ns, RT_RELAXED) > 1000000 &&
                rt__netpoll_try_own()) {
                rt__netpoll(0, w);
                rt__netpoll_release();
            }
        }
        if (w->runnext) {
            co = w->runnext;
            w->runnext = NULL;
            return co;
        }
        if ((co = runq_get(w)))
            return co;
        if ((co = inject_get(w, false)))
            return co;
        if (rt__netpoll_try_own()) {
            int n = rt__netpoll(0, w);
            rt__netpoll_release();
            if (n > 0)
                continue;   /* what it readied is in runnext or the ring */
        }
        /* Steal, if not too many workers are searching already. */
        if (!w->searching &&
            2 * atomic_load(&rt->nsearching) < rt->nworkers - atomic_load(&rt->nidle)) {
            w->searching = 1;
            atomic_fetch_add(&rt->nsearching, 1);
        }
        if (w->searching && rt->nworkers > 1) {
            for (int round = 0; round < 2; round++) {
                uint32_t start = (w->rand = w->rand * 1103515245u + 12345u) >> 8;
                for (int i = 0; i < rt->nworkers; i++) {
                    rt_worker *v = &rt->workers[(start + (uint32_t)i) % (uint32_t)rt->nworkers];
                    if (v == w)
                        continue;
                    if ((co = runq_steal(w, v)))
                        return co;
                }
            }
        }
        /* Nothing: park. Stop searching before announcing idleness (a
         * waker may set searching again once we are listed); the re-check
         * below sees any work published before that. */
        if (w->searching) {
            w->searching = 0;
            atomic_fetch_sub(&rt->nsearching, 1);
        }
        bool poller = rt__netpoll_try_own();
        pthread_mutex_lock(&rt->idle_lock);
        w->idle = 1;
        w->polling = poller;
        w->idle_next = rt->idle_list;
        rt->idle_list = w;
        atomic_fetch_add(&rt->nidle, 1);
        pthread_mutex_unlock(&rt->idle_lock);
        /* Dekker with rt__wakep() (store work, fence, load nidle): announce,
         * fence, load the queues. The netpoll is re-checked too: its owner
         * may have released it (and found nobody idle to wake) after our
         * rt__netpoll_try_own() failed, and then nobody would poll. */
        rt__fence_seq();
        if (any_work(w) || (!poller && !rt__netpoll_owned())) {
            leave_idle(w);
            if (poller)
                rt__netpoll_release();
            continue;
        }
        RT_STAT_ADD(w->st_parks, 1);
        if (poller) {
            rt__netpoll(-1, w);   /* leaves idle itself before readying */
            rt__netpoll_release();
        } else {
            while (!atomic_load(&w->wake_pending) && !atomic_load(&rt->stopping))
                rt__futex_wait(&w->wake_pending, 0, -1);
            leave_idle(w);
        }
    }
}

/* Called by the idle poller between epoll_wait and processing events, so
 * that the coroutines it readies are not announced to itself. */
void rt__netpoll_leave_idle(rt_worker *w)
{
    leave_idle(w);
}

static void *worker_main(void *arg)
{
    rt_worker *w = arg;
    tls_worker = w;
    rt__altstack_init(w);
#if defined(RT_TSAN)
    w->tsan_fiber = __tsan_get_current_fiber();
#endif
#if defined(RT_ASAN)
    {
        pthread_attr_t attr;
        void *addr;
        size_t size;
        pthread_getattr_np(pthread_self(), &attr);
        pthread_attr_getstack(&attr, &addr, &size);
        pthread_attr_destroy(&attr);
        w->asan_stack_bottom = addr;
        w->asan_stack_size = size;
    }
#endif
    for (;;) {
        post_switch(w);
        rt_co *co;
        if (w->runnext && !atomic_load_explicit(&rt__rt.stopping, RT_RELAXED) &&
            w->tick % RT_FAIR_TICKS != 0) {
            co = w->runnext;
            w->runnext = NULL;
            w->tick++;
        } else {
            co = find_runnable(w);
            if (!co)
                break;
            stop_searching(w);
        }
        san_before(w, NULL, co, false);
        note_run(w, co);
        atomic_store_explicit(&w->mon_busy, 1, RT_RELAXED);
        rt__switch(&w->sched_sp, co->sp);
        atomic_store_explicit(&w->mon_busy, 0, RT_RELAXED);
        san_after(w, NULL);
        w->cur = NULL;
    }
    rt__altstack_fini(w);
    tls_worker = NULL;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Monitor                                                                   */

static void *monitor_main(void *arg)
{
    rt_runtime *rt = &rt__rt;
    int n = rt->nworkers;
    uint64_t *last_tick = calloc((size_t)n, sizeof *last_tick);
    int64_t *since = calloc((size_t)n, sizeof *since);
    char *reported = calloc((size_t)n, 1);
    int64_t thr_ns = (int64_t)rt->cfg.hog_threshold_ms * 1000000;
    int64_t period_ns = thr_ns > 0 ? thr_ns / 4 : 10000000;
    if (period_ns < 1000000) period_ns = 1000000;
    if (period_ns > 20000000) period_ns = 20000000;
    int64_t last_trim = rt_now_ns();
    (void)arg;

    pthread_mutex_lock(&rt->mon_lock);
    while (!rt->mon_stop && last_tick && since && reported) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t dl = ts.tv_sec * 1000000000LL + ts.tv_nsec + period_ns;
        ts.tv_sec = dl / 1000000000LL;
        ts.tv_nsec = dl % 1000000000LL;
        pthread_cond_timedwait(&rt->mon_cond, &rt->mon_lock, &ts);
        if (rt->mon_stop)
            break;
        pthread_mutex_unlock(&rt->mon_lock);
        int64_t now = rt_now_ns();
        for (int i = 0; thr_ns > 0 && i < n; i++) {
            rt_worker *w = &rt->workers[i];
            uint64_t tick = atomic_load_explicit(&w->st_switches, RT_RELAXED);
            int busy = atomic_load_explicit(&w->mon_busy, RT_RELAXED);
            if (!busy || tick != last_tick[i]) {
                last_tick[i] = tick;
                since[i] = now;
                reported[i] = 0;
                continue;
            }
            if (!reported[i] && now - since[i] >= thr_ns) {
                reported[i] = 1;
                atomic_fetch_add(&rt->hogs, 1);
                rt_fn fn = atomic_load_explicit(&w->mon_fn, RT_RELAXED);
                const char *name = atomic_load_explicit(&w->mon_name, RT_RELAXED);
                void *fp;
                memcpy(&fp, &fn, sizeof fp);
                char qname[96];
                rt_log(RT_LOG_WARN, "rt", "coroutine holds a worker without yielding",
                       "co=%llu name=%s fn=%p worker=%d ms=%lld",
                       (unsigned long long)atomic_load_explicit(&w->mon_id, RT_RELAXED),
                       rt_log_q(qname, sizeof qname, name ? name : "?"), fp, i,
                       (long long)((now - since[i]) / 1000000));
            }
        }
        /* Netpoll and timers must not starve while every worker is busy. */
        if (now - atomic_load_explicit(&rt__last_poll_ns, RT_RELAXED) > 10000000 &&
            rt__netpoll_try_own()) {
            rt__netpoll(0, NULL);
            rt__netpoll_release();
        }
        if (now - rt__timers_next() > 10000000)
            rt__timers_run(now);
        if (now - last_trim > 1000000000) {
            last_trim = now;
            rt__stack_trim();
        }
        pthread_mutex_lock(&rt->mon_lock);
    }
    pthread_mutex_unlock(&rt->mon_lock);
    free(last_tick);
    free(since);
    free(reported);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Start and stop                                                            */

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int rt_running(void)
{
    return atomic_load(&rt__rt.running);
}

int rt_start(const rt_config *cfg)
{
    rt_runtime *rt = &rt__rt;
    int rc;
    if (atomic_load(&rt->running))
        return -EBUSY;
    memset(rt, 0, sizeof *rt);
    if (cfg)
        rt->cfg = *cfg;
    if (rt->cfg.workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        rt->cfg.workers = n > 0 ? (int)n : 1;
    }
    if (rt->cfg.stack_size == 0)
        rt->cfg.stack_size = 64 * 1024;
    if (rt->cfg.stack_size < 16 * 1024)
        rt->cfg.stack_size = 16 * 1024;
    if (rt->cfg.blocking_threads <= 0)
        rt->cfg.blocking_threads = 64;
    if (rt->cfg.hog_threshold_ms == 0)
        rt->cfg.hog_threshold_ms = 100;
    if (rt->cfg.stack_pool_max == 0)
        rt->cfg.stack_pool_max = 64;
    if (rt->cfg.stack_pool_global_max == 0)
        rt->cfg.stack_pool_global_max = 4096;
    rt->nworkers = rt->cfg.workers;
    atomic_init(&rt->id_counter, 1);
    pthread_mutex_init(&rt->inject_lock, NULL);
    pthread_mutex_init(&rt->idle_lock, NULL);
    pthread_mutex_init(&rt->mon_lock, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&rt->mon_cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    raise_nofile();
    rt__segv_install();
    rt->workers = aligned_alloc(64, ((sizeof(rt_worker) * (size_t)rt->nworkers) + 63) & ~(size_t)63);
    if (!rt->workers)
        return -ENOMEM;
    memset(rt->workers, 0, sizeof(rt_worker) * (size_t)rt->nworkers);
    if ((rc = rt__stacks_init()) < 0 || (rc = rt__timers_init()) < 0 ||
        (rc = rt__netpoll_init()) < 0 || (rc = rt__blocking_init()) < 0) {
        free(rt->workers);
        rt->workers = NULL;
        return rc;
    }
    atomic_store(&rt->running, 1);
    for (int i = 0; i < rt->nworkers; i++) {
        rt_worker *w = &rt->workers[i];
        w->index = i;
        w->rand = 0x9e3779b9u * (uint32_t)(i + 1);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            rt__panic("rt: cannot create worker thread\n");
    }
    if (pthread_create(&rt->monitor, NULL, monitor_main, NULL) != 0)
        rt__panic("rt: cannot create monitor thread\n");
    return 0;
}

void rt_stop(void)
{
    rt_runtime *rt = &rt__rt;
    if (!atomic_load(&rt->running) || rt__cur_worker())
        return;
    atomic_store(&rt->stopping, 1);
    pthread_mutex_lock(&rt->idle_lock);
    for (int i = 0; i < rt->nworkers; i++)
        atomic_store(&rt->workers[i].wake_pending, 1);
    pthread_mutex_unlock(&rt->idle_lock);
    for (int i = 0; i < rt->nworkers; i++)
        rt__futex_wake(&rt->workers[i].wake_pending, 1);
    rt__netpoll_break();
    for (int i = 0; i < rt->nworkers; i++)
        pthread_join(rt->workers[i].thread, NULL);

    /* No worker runs now. Foreign threads stop touching coroutines. */
    atomic_store(&rt->running, 0);
    while (atomic_load(&rt->foreign_inflight))
        sched_yield();
    rt__spin_lock(&rt->foreign_lock);
    rt_waiter *fw;
    while ((fw = rt__waitq_pop(&rt->foreign_waiters)))
        rt__waiter_fire(fw, -ECANCELED);
    rt__spin_unlock(&rt->foreign_lock);

    pthread_mutex_lock(&rt->mon_lock);
    rt->mon_stop = 1;
    pthread_cond_broadcast(&rt->mon_cond);
    pthread_mutex_unlock(&rt->mon_lock);
    pthread_join(rt->monitor, NULL);

    rt__blocking_fini();
    rt__netpoll_fini();
    rt__timers_fini();
    rt__stacks_fini();   /* every stack, parked coroutines included */
    pthread_mutex_destroy(&rt->inject_lock);
    pthread_mutex_destroy(&rt->idle_lock);
    pthread_mutex_destroy(&rt->mon_lock);
    pthread_cond_destroy(&rt->mon_cond);
    free(rt->workers);
    rt->workers = NULL;
    rt->inject_head = rt->inject_tail = NULL;
    rt->urgent_head = rt->urgent_tail = NULL;
    atomic_store(&rt->urgent_len, 0);
    rt->nworkers = 0;
}

typedef struct main_arg { rt_fn fn; void *arg; } main_arg;

int rt_main(const rt_config *cfg, rt_fn fn, void *arg)
{
    rt_co *co;
    int rc = rt_start(cfg);
    if (rc < 0)
        return rc;
    rc = rt_spawn_ex(&co, fn, arg, &(rt_spawn_opts){.name = "main"});
    if (rc == 0)
        rc = rt_join(co);
    rt_stop();
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Stats                                                                     */

int rt_worker_stats_get(int i, rt_worker_stats *out)
{
    rt_runtime *rt = &rt__rt;
    if (!rt->workers || i < 0 || i >= rt->nworkers || !out)
        return -EINVAL;
    rt_worker *w = &rt->workers[i];
    out->spawns = atomic_load_explicit(&w->st_spawns, RT_RELAXED);
    out->switches = atomic_load_explicit(&w->st_switches, RT_RELAXED);
    out->steals = atomic_load_explicit(&w->st_steals, RT_RELAXED);
    out->stolen_tasks = atomic_load_explicit(&w->st_stolen, RT_RELAXED);
    out->parks = atomic_load_explicit(&w->st_parks, RT_RELAXED);
    out->polls = atomic_load_explicit(&w->st_polls, RT_RELAXED);
    out->runq_depth = runq_len(w);
    return 0;
}

void rt_stats_get(rt_stats *out)
{
    rt_runtime *rt = &rt__rt;
    uint64_t spawns = atomic_load(&foreign_spawns), exits = 0, pooled = 0;
    memset(out, 0, sizeof *out);
    for (int i = 0; rt->workers && i < rt->nworkers; i++) {
        rt_worker *w = &rt->workers[i];
        spawns += atomic_load_explicit(&w->st_spawns, RT_RELAXED);
        exits += atomic_load_explicit(&w->st_exits, RT_RELAXED);
        pooled += atomic_load_explicit(&w->pool_len, RT_RELAXED);
    }
    out->live = spawns > exits ? spawns - exits : 0;
    out->hogs = atomic_load(&rt->hogs);
    out->blocking_calls = rt__blocking_calls();
    out->blocking_threads = rt__blocking_threads();
    out->stacks_pooled = pooled;
    out->inject_depth = atomic_load(&rt->inject_len);
}
