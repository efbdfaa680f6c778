/*
 * sync.c: mutex, condition, channel, wait group, semaphore, event.
 *
 * Every object is a spinlock, its state and FIFO wait queues of rt_waiter.
 * A waker claims a waiter under the object's lock (doing the hand-off, e.g.
 * copying a channel element, while it still holds the lock) and completes
 * it after unlocking; a waiter whose deadline claimed it first is skipped,
 * and it unlinks itself when it resumes.
 */
#include "runtime/rt_int.h"

static rt_co *self_co(void)
{
    rt_worker *w = rt__cur_worker();
    rt_co *co = w ? w->cur : NULL;
    if (!co)
        rt__panic("rt: a waiting call was made outside a coroutine\n");
    return co;
}

/* Pops the first waiter of q that can still be claimed, or NULL. */
static inline __attribute__((always_inline)) rt_waiter *claim_first(rt_waitq *q)
{
    rt_waiter *w;
    while ((w = rt__waitq_pop(q)))
        if (rt__waiter_claim(w))
            return w;
    return NULL;
}

/* Claims every waiter of q onto a private list linked by ->next. */
static rt_waiter *claim_all(rt_waitq *q)
{
    rt_waiter *list = NULL, **tail = &list, *w;
    while ((w = rt__waitq_pop(q))) {
        if (rt__waiter_claim(w)) {
            *tail = w;
            tail = &w->next;
        }
    }
    *tail = NULL;
    return list;
}

static void complete_all(rt_waiter *list, int result)
{
    while (list) {
        rt_waiter *next = list->next;   /* read before the waiter can leave */
        rt__waiter_complete(list, result);
        list = next;
    }
}

static void q_push(void *q, rt_waiter *w)
{
    rt__waitq_push(q, w);
}

static void q_remove(void *q, rt_waiter *w)
{
    rt__waitq_remove(q, w);
}

/* Publishes w on q under l (held by the caller) and parks until completed
 * or the deadline; l is released either way. */
static inline int wait_on(rt_spin *l, rt_waitq *q, rt_waiter *w, int64_t deadline)
{
    if (deadline == RT_NO_DEADLINE) {
        w->racy = 0;
        rt__waitq_push(q, w);
        return rt__waiter_wait_unlock(w, l);
    }
    return rt__park_on(l, q, w, deadline, q_push, q_remove);
}

/* Copies one channel element; most elements are a pointer or an integer. */
static inline void elem_copy(void *dst, const void *src, size_t n)
{
    if (n == sizeof(uint64_t))
        memcpy(dst, src, sizeof(uint64_t));
    else
        memcpy(dst, src, n);
}

/* ------------------------------------------------------------------------ */
/* Mutex: FIFO hand-off to the first waiter.                                 */

struct rt_mutex {
    rt_spin lock;
    int locked;
    rt_waitq q;
};

rt_mutex *rt_mutex_new(void)
{
    return calloc(1, sizeof(rt_mutex));
}

void rt_mutex_free(rt_mutex *m)
{
    free(m);
}

void rt_mutex_lock(rt_mutex *m)
{
    rt__spin_lock(&m->lock);
    if (!m->locked) {
        m->locked = 1;
        rt__spin_unlock(&m->lock);
        return;
    }
    rt_waiter w;
    rt__waiter_init(&w, self_co());
    wait_on(&m->lock, &m->q, &w, RT_NO_DEADLINE);   /* ownership is handed to us */
}

int rt_mutex_trylock(rt_mutex *m)
{
    int rc = -EAGAIN;
    rt__spin_lock(&m->lock);
    if (!m->locked) {
        m->locked = 1;
        rc = 0;
    }
    rt__spin_unlock(&m->lock);
    return rc;
}

void rt_mutex_unlock(rt_mutex *m)
{
    rt__spin_lock(&m->lock);
    rt_waiter *w = claim_first(&m->q);
    if (!w)
        m->locked = 0;
    rt__spin_unlock(&m->lock);
    if (w)
        rt__waiter_complete(w, 0);
}

/* ------------------------------------------------------------------------ */
/* Condition                                                                 */

struct rt_cond {
    rt_spin lock;
    rt_waitq q;
};

rt_cond *rt_cond_new(void)
{
    return calloc(1, sizeof(rt_cond));
}

void rt_cond_free(rt_cond *c)
{
    free(c);
}

int rt_cond_wait(rt_cond *c, rt_mutex *m, int64_t deadline)
{
    rt_waiter w;
    rt__waiter_init(&w, self_co());
    /* A racy waiter: m is released between publishing and parking. */
    rt__spin_lock(&c->lock);
    rt__waitq_push(&c->q, &w);
    rt__spin_unlock(&c->lock);
    rt_mutex_unlock(m);
    int r = rt__wait_deadline(&w, deadline);
    if (r == -ETIMEDOUT) {
        rt__spin_lock(&c->lock);
        rt__waitq_remove(&c->q, &w);
        rt__spin_unlock(&c->lock);
    }
    rt_mutex_lock(m);
    return r == -ETIMEDOUT ? -ETIMEDOUT : 0;
}

void rt_cond_signal(rt_cond *c)
{
    rt__spin_lock(&c->lock);
    rt_waiter *w = claim_first(&c->q);
    rt__spin_unlock(&c->lock);
    if (w)
        rt__waiter_complete(w, 0);
}

void rt_cond_broadcast(rt_cond *c)
{
    rt__spin_lock(&c->lock);
    rt_waiter *list = claim_all(&c->q);
    rt__spin_unlock(&c->lock);
    complete_all(list, 0);
}

/* ------------------------------------------------------------------------ */
/* Channel                                                                   */

struct rt_chan {
    rt_spin lock;
    size_t esz, cap, head, len;
    int closed;
    rt_waitq sendq, recvq;
    char buf[];
};

rt_chan *rt_chan_new(size_t elem_size, size_t capacity)
{
    if (capacity < 1 || elem_size < 1 || elem_size > ((size_t)1 << 30) / capacity)
        return NULL;
    rt_chan *ch = calloc(1, sizeof(rt_chan) + elem_size * capacity);
    if (!ch)
        return NULL;
    ch->esz = elem_size;
    ch->cap = capacity;
    return ch;
}

void rt_chan_free(rt_chan *ch)
{
    free(ch);
}

static inline char *slot(rt_chan *ch, size_t i)
{
    size_t j = ch->head + i;   /* head < cap and i <= cap: no division */
    if (j >= ch->cap)
        j -= ch->cap;
    return ch->buf + j * ch->esz;
}

/* Returns 0 (sent), -EPIPE, or -EAGAIN with the lock still held. */
static inline __attribute__((always_inline)) int do_send_now(rt_chan *ch, const void *elem,
                                                             rt_waiter **wake)
{
    *wake = NULL;
    if (ch->closed)
        return -EPIPE;
    rt_waiter *r = claim_first(&ch->recvq);
    if (r) {
        elem_copy(r->data, elem, ch->esz);
        *wake = r;
        return 0;
    }
    if (ch->len < ch->cap) {
        elem_copy(slot(ch, ch->len), elem, ch->esz);
        ch->len++;
        return 0;
    }
    return -EAGAIN;
}

static inline __attribute__((always_inline)) int do_recv_now(rt_chan *ch, void *elem,
                                                             rt_waiter **wake)
{
    *wake = NULL;
    if (ch->len > 0) {
        elem_copy(elem, slot(ch, 0), ch->esz);
        if (++ch->head == ch->cap)
            ch->head = 0;
        ch->len--;
        rt_waiter *s = claim_first(&ch->sendq);
        if (s) {
            elem_copy(slot(ch, ch->len), s->data, ch->esz);
            ch->len++;
            *wake = s;
        }
        return 0;
    }
    rt_waiter *s = claim_first(&ch->sendq);
    if (s) {
        elem_copy(elem, s->data, ch->esz);
        *wake = s;
        return 0;
    }
    return ch->closed ? -EPIPE : -EAGAIN;
}

static int chan_wait(rt_chan *ch, rt_waitq *q, void *elem, int64_t deadline);

/* Send and receive take the channel's lock once and do what can be done
 * at once inline (do_*_now() are inlined into each caller, so the common
 * hand-off is a straight line); parking is out of line in chan_wait(). */
static inline __attribute__((always_inline)) int chan_op(rt_chan *ch, void *elem,
                                                         int64_t deadline, bool send)
{
    rt_waiter *wake;
    rt__spin_lock(&ch->lock);
    int rc = send ? do_send_now(ch, elem, &wake) : do_recv_now(ch, elem, &wake);
    if (RT_UNLIKELY(rc == -EAGAIN))
        return chan_wait(ch, send ? &ch->sendq : &ch->recvq, elem, deadline);
    rt__spin_unlock(&ch->lock);
    if (wake)
        rt__waiter_complete(wake, 0);
    return rc;
}

int rt_chan_send(rt_chan *ch, const void *elem, int64_t deadline)
{
    return chan_op(ch, (void *)elem, deadline, true);
}

int rt_chan_recv(rt_chan *ch, void *elem, int64_t deadline)
{
    return chan_op(ch, elem, deadline, false);
}

/* Nothing to do at once: parks on q (the lock is held, and released by
 * the time this returns). */
static __attribute__((noinline)) int chan_wait(rt_chan *ch, rt_waitq *q, void *elem,
                                               int64_t deadline)
{
    if (deadline != RT_NO_DEADLINE && deadline <= rt_now_ns()) {
        rt__spin_unlock(&ch->lock);
        return -ETIMEDOUT;
    }
    rt_waiter w;
    rt__waiter_init(&w, self_co());
    w.data = elem;
    return wait_on(&ch->lock, q, &w, deadline);
}

/* try_send / try_recv: the same without parking. */
static int chan_try(rt_chan *ch, void *elem, bool send)
{
    rt_waiter *wake;
    rt__spin_lock(&ch->lock);
    int rc = send ? do_send_now(ch, elem, &wake) : do_recv_now(ch, elem, &wake);
    rt__spin_unlock(&ch->lock);
    if (wake)
        rt__waiter_complete(wake, 0);
    return rc;
}

int rt_chan_try_send(rt_chan *ch, const void *elem)
{
    return chan_try(ch, (void *)elem, true);
}

int rt_chan_try_recv(rt_chan *ch, void *elem)
{
    return chan_try(ch, elem, false);
}

void rt_chan_close(rt_chan *ch)
{
    rt__spin_lock(&ch->lock);
    ch->closed = 1;
    rt_waiter *r = claim_all(&ch->recvq);
    rt_waiter *s = claim_all(&ch->sendq);
    rt__spin_unlock(&ch->lock);
    complete_all(r, -EPIPE);
    complete_all(s, -EPIPE);
}

size_t rt_chan_len(rt_chan *ch)
{
    rt__spin_lock(&ch->lock);
    size_t n = ch->len;
    rt__spin_unlock(&ch->lock);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Wait group                                                                */

struct rt_wg {
    rt_spin lock;
    int64_t n;
    rt_waitq q;
};

rt_wg *rt_wg_new(void)
{
    return calloc(1, sizeof(rt_wg));
}

void rt_wg_free(rt_wg *wg)
{
    free(wg);
}

void rt_wg_add(rt_wg *wg, int64_t n)
{
    rt_waiter *list = NULL;
    rt__spin_lock(&wg->lock);
    wg->n += n;
    if (wg->n < 0)
        rt__panic("rt: wait group counter below zero\n");
    if (wg->n == 0)
        list = claim_all(&wg->q);
    rt__spin_unlock(&wg->lock);
    complete_all(list, 0);
}

void rt_wg_done(rt_wg *wg)
{
    rt_wg_add(wg, -1);
}

int rt_wg_wait(rt_wg *wg, int64_t deadline)
{
    rt__spin_lock(&wg->lock);
    if (wg->n == 0) {
        rt__spin_unlock(&wg->lock);
        return 0;
    }
    rt_waiter w;
    rt__waiter_init(&w, self_co());
    return wait_on(&wg->lock, &wg->q, &w, deadline);
}

/* ------------------------------------------------------------------------ */
/* Semaphore: a release hands its unit to the first waiter.                   */

struct rt_sem {
    rt_spin lock;
    int64_t count;
    rt_waitq q;
};

rt_sem *rt_sem_new(int64_t count)
{
    rt_sem *s = calloc(1, sizeof(rt_sem));
    if (s)
        s->count = count;
    return s;
}

void rt_sem_free(rt_sem *s)
{
    free(s);
}

int rt_sem_acquire(rt_sem *s, int64_t deadline)
{
    rt__spin_lock(&s->lock);
    if (s->count > 0) {
        s->count--;
        rt__spin_unlock(&s->lock);
        return 0;
    }
    if (deadline != RT_NO_DEADLINE && deadline <= rt_now_ns()) {
        rt__spin_unlock(&s->lock);
        return -ETIMEDOUT;
    }
    rt_waiter w;
    rt__waiter_init(&w, self_co());
    return wait_on(&s->lock, &s->q, &w, deadline);
}

int rt_sem_try_acquire(rt_sem *s)
{
    int rc = -EAGAIN;
    rt__spin_lock(&s->lock);
    if (s->count > 0) {
        s->count--;
        rc = 0;
    }
    rt__spin_unlock(&s->lock);
    return rc;
}

void rt_sem_release(rt_sem *s)
{
    rt__spin_lock(&s->lock);
    rt_waiter *w = claim_first(&s->q);
    if (!w)
        s->count++;
    rt__spin_unlock(&s->lock);
    if (w)
        rt__waiter_complete(w, 0);
}

/* ------------------------------------------------------------------------ */
/* Event: signalled from any thread, one remembered signal.                   */

struct rt_event {
    rt_spin lock;
    int signaled;
    rt_waitq q;
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
    bool foreign = rt__cur_worker() == NULL;
    /* A foreign thread may only touch waiters while the runtime runs:
     * after shutdown they live on stacks that are gone. */
    bool live = !foreign || rt__foreign_enter();
    rt_waiter *w = NULL;
    rt__spin_lock(&ev->lock);
    if (live)
        w = claim_first(&ev->q);
    if (!w)
        ev->signaled = 1;
    rt__spin_unlock(&ev->lock);
    if (w)
        rt__waiter_complete(w, 0);
    if (foreign && live)
        rt__foreign_exit();
}

int rt_event_wait(rt_event *ev, int64_t deadline)
{
    rt__spin_lock(&ev->lock);
    if (ev->signaled) {
        ev->signaled = 0;
        rt__spin_unlock(&ev->lock);
        return 0;
    }
    if (deadline != RT_NO_DEADLINE && deadline <= rt_now_ns()) {
        rt__spin_unlock(&ev->lock);
        return -ETIMEDOUT;
    }
    rt_waiter w;
    rt__waiter_init(&w, self_co());
    return wait_on(&ev->lock, &ev->q, &w, deadline);
}
