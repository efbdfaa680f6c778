/*
 * timer.c: one binary min-heap of deadlines for the whole runtime, under a
 * spinlock. A timer completes its waiter when it fires (if nobody claimed
 * the waiter first). Firing claims under the heap lock, so once
 * rt__timer_del() returns, the timer no longer touches its waiter.
 *
 * The idle poller blocks in epoll_wait until the nearest deadline; it
 * publishes that time (poll_until) under the same lock, and adding an
 * earlier timer breaks its poll.
 */
#include "runtime/rt_int.h"

static rt_spin tlock;
static rt_timer **heap;
static size_t heap_len, heap_cap;
static _Atomic int64_t next_when = INT64_MAX;
static int64_t poll_until = INT64_MAX;

int rt__timers_init(void)
{
    heap_cap = 256;
    heap_len = 0;
    heap = malloc(heap_cap * sizeof *heap);
    atomic_store(&next_when, INT64_MAX);
    poll_until = INT64_MAX;
    return heap ? 0 : -ENOMEM;
}

void rt__timers_fini(void)
{
    free(heap);
    heap = NULL;
    heap_len = heap_cap = 0;
    atomic_store(&next_when, INT64_MAX);
}

static void sift_up(size_t i)
{
    rt_timer *t = heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p]->when <= t->when)
            break;
        heap[i] = heap[p];
        heap[i]->idx = (int)i;
        i = p;
    }
    heap[i] = t;
    t->idx = (int)i;
}

static void sift_down(size_t i)
{
    rt_timer *t = heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_len)
            break;
        if (c + 1 < heap_len && heap[c + 1]->when < heap[c]->when)
            c++;
        if (t->when <= heap[c]->when)
            break;
        heap[i] = heap[c];
        heap[i]->idx = (int)i;
        i = c;
    }
    heap[i] = t;
    t->idx = (int)i;
}

static void do_remove(rt_timer *t)
{
    size_t i = (size_t)t->idx;
    t->idx = -1;
    heap_len--;
    if (i != heap_len) {
        rt_timer *moved = heap[heap_len];
        heap[i] = moved;
        moved->idx = (int)i;
        sift_down(i);
        sift_up((size_t)moved->idx);
    }
}

static void publish_next(void)
{
    atomic_store_explicit(&next_when, heap_len ? heap[0]->when : INT64_MAX, RT_RELEASE);
}

int rt__timer_try_add(rt_timer *t)
{
    bool brk = false;
    rt__spin_lock(&tlock);
    if (heap_len == heap_cap) {
        rt_timer **nh = realloc(heap, heap_cap * 2 * sizeof *heap);
        if (!nh) {
            rt__spin_unlock(&tlock);
            t->idx = -1;
            return -ENOMEM;
        }
        heap = nh;
        heap_cap *= 2;
    }
    heap[heap_len] = t;
    heap_len++;
    sift_up(heap_len - 1);
    if (t->idx == 0) {
        publish_next();
        brk = t->when < poll_until;
    }
    rt__spin_unlock(&tlock);
    if (brk)
        rt__netpoll_break();
    return 0;
}

/* Arms t. If the heap cannot grow, the timer fires at once (a spurious
 * -ETIMEDOUT is better than a wait that never ends). */
void rt__timer_add(rt_timer *t)
{
    if (rt__timer_try_add(t) < 0)
        rt__waiter_fire(t->w, t->result);
}

void rt__timer_del(rt_timer *t)
{
    rt__spin_lock(&tlock);
    if (t->idx >= 0) {
        do_remove(t);
        publish_next();
    }
    rt__spin_unlock(&tlock);
}

int64_t rt__timers_next(void)
{
    return atomic_load_explicit(&next_when, RT_ACQUIRE);
}

int64_t rt__timers_poll_begin(void)
{
    rt__spin_lock(&tlock);
    poll_until = heap_len ? heap[0]->when : INT64_MAX;
    int64_t r = poll_until;
    rt__spin_unlock(&tlock);
    return r;
}

void rt__timers_poll_end(void)
{
    rt__spin_lock(&tlock);
    poll_until = INT64_MAX;
    rt__spin_unlock(&tlock);
}

int rt__timers_run(int64_t now)
{
    rt_waiter *batch[64];
    int results[64];
    int total = 0;
    for (;;) {
        int n = 0;
        rt__spin_lock(&tlock);
        while (heap_len && heap[0]->when <= now && n < 64) {
            rt_timer *t = heap[0];
            do_remove(t);
            if (rt__waiter_claim(t->w)) {
                results[n] = t->result;
                batch[n++] = t->w;
            }
        }
        bool more = heap_len && heap[0]->when <= now;
        publish_next();
        rt__spin_unlock(&tlock);
        for (int i = 0; i < n; i++)
            rt__waiter_complete(batch[i], results[i]);
        total += n;
        if (!more)
            return total;
    }
}

int rt__wait_deadline(rt_waiter *w, int64_t deadline)
{
    rt_timer t;
    bool armed = false;
    if (deadline != RT_NO_DEADLINE) {
        t.when = deadline;
        t.idx = -1;
        t.w = w;
        t.result = -ETIMEDOUT;
        if (deadline <= rt_now_ns()) {
            rt__waiter_fire(w, -ETIMEDOUT);
        } else {
            rt__timer_add(&t);
            armed = true;
        }
    }
    int r = rt__waiter_wait(w);
    if (armed)
        rt__timer_del(&t);
    return r;
}

int rt__park_on(rt_spin *l, void *q, rt_waiter *w, int64_t deadline,
                void (*push)(void *q, rt_waiter *w), void (*unlink)(void *q, rt_waiter *w))
{
    if (deadline == RT_NO_DEADLINE) {
        w->racy = 0;
        push(q, w);
        return rt__waiter_wait_unlock(w, l);
    }
    w->racy = 1;
    push(q, w);
    rt__spin_unlock(l);
    int r = rt__wait_deadline(w, deadline);
    if (r == -ETIMEDOUT && unlink) {
        rt__spin_lock(l);
        unlink(q, w);
        rt__spin_unlock(l);
    }
    return r;
}

int rt_sleep_ns(int64_t ns)
{
    rt_worker *w = rt__cur_worker();
    if (!w || !w->cur) {
        struct timespec ts = {ns / 1000000000LL, ns % 1000000000LL};
        if (ns > 0)
            nanosleep(&ts, NULL);
        return 0;
    }
    if (atomic_load_explicit(&rt__rt.stopping, RT_RELAXED))
        return -ECANCELED;
    if (ns <= 0) {
        rt_yield();
        return 0;
    }
    rt_waiter wt;
    rt_timer t;
    rt__waiter_init(&wt, w->cur);
    t.when = rt_now_ns() + ns;
    t.idx = -1;
    t.w = &wt;
    t.result = 0;
    rt__timer_add(&t);
    int r = rt__waiter_wait(&wt);
    rt__timer_del(&t);
    return r;
}

int rt_sleep(int64_t ms)
{
    return rt_sleep_ns(ms * 1000000);
}
