/*
 * blocking.c: rt_blocking() runs a blocking call on a pool of OS threads
 * while the calling coroutine parks. Threads are created on demand up to
 * cfg.blocking_threads and exit after 10 s without work. On shutdown the
 * calls already running finish; queued ones are dropped (their coroutines
 * are torn down with the runtime). Threads are joined, not detached: an
 * exited thread leaves its handle on a list that the next thread creation
 * or the shutdown joins, so no pool thread outlives rt_stop (a fork right
 * after it is single-threaded).
 */
#include "runtime/rt_int.h"

#include <time.h>

typedef struct rt_job {
    intptr_t (*fn)(void *arg);
    void *arg;
    intptr_t ret;
    rt_waiter w;
    struct rt_job *next;
} rt_job;

static pthread_mutex_t block_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t block_cond;     /* work arrived or stop */
static pthread_cond_t block_done;     /* a thread exited */
static rt_job *job_head, *job_tail;
static int nthreads, nidle, stop;

typedef struct pool_thread {
    pthread_t t;
    struct pool_thread *next;
} pool_thread;
static pool_thread *exited;           /* ended, not yet joined */
static _Atomic uint64_t calls;
static _Atomic uint64_t threads_gauge;

int rt__blocking_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&block_cond, &ca);
    pthread_cond_init(&block_done, NULL);
    pthread_condattr_destroy(&ca);
    job_head = job_tail = NULL;
    exited = NULL;
    nthreads = nidle = stop = 0;
    return 0;
}

/* Joins and frees the threads of list (taken off `exited`). */
static void join_all(pool_thread *list)
{
    while (list != NULL) {
        pool_thread *next = list->next;
        pthread_join(list->t, NULL);
        free(list);
        list = next;
    }
}

static void *pool_main(void *arg)
{
    pool_thread *self = arg;
    rt__foreign_urgent();
    pthread_mutex_lock(&block_lock);
    for (;;) {
        while (!job_head && !stop) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 10;
            nidle++;
            int rc = pthread_cond_timedwait(&block_cond, &block_lock, &ts);
            nidle--;
            if (rc != 0 && !job_head)
                goto out;
        }
        if (stop)
            break;
        rt_job *j = job_head;
        job_head = j->next;
        if (!job_head)
            job_tail = NULL;
        pthread_mutex_unlock(&block_lock);
        j->ret = j->fn(j->arg);
        rt__waiter_fire(&j->w, 0);
        pthread_mutex_lock(&block_lock);
    }
out:
    self->next = exited;
    exited = self;
    nthreads--;
    atomic_store(&threads_gauge, (uint64_t)nthreads);
    pthread_cond_broadcast(&block_done);
    pthread_mutex_unlock(&block_lock);
    return NULL;
}

intptr_t rt_blocking(intptr_t (*fn)(void *arg), void *arg)
{
    rt_worker *me = rt__cur_worker();
    if (!me || !me->cur)
        return fn(arg);   /* a foreign thread may block itself */
    rt_job j = {.fn = fn, .arg = arg, .ret = 0, .next = NULL};
    rt__waiter_init(&j.w, me->cur);
    atomic_fetch_add(&calls, 1);
    pthread_mutex_lock(&block_lock);
    if (job_tail) job_tail->next = &j;
    else job_head = &j;
    job_tail = &j;
    pool_thread *dead = NULL;
    if (nidle == 0 && nthreads < rt__rt.cfg.blocking_threads) {
        pool_thread *pt = malloc(sizeof *pt);
        if (pt != NULL && pthread_create(&pt->t, NULL, pool_main, pt) == 0) {
            nthreads++;
            atomic_store(&threads_gauge, (uint64_t)nthreads);
        } else {
            free(pt);   /* the job waits for a pool thread */
        }
        dead = exited;
        exited = NULL;
    }
    pthread_cond_signal(&block_cond);
    pthread_mutex_unlock(&block_lock);
    join_all(dead);   /* they have left pool_main: returns at once */
    rt__waiter_wait(&j.w);
    return j.ret;
}

void rt__blocking_fini(void)
{
    pthread_mutex_lock(&block_lock);
    stop = 1;
    pthread_cond_broadcast(&block_cond);
    while (nthreads > 0)
        pthread_cond_wait(&block_done, &block_lock);
    job_head = job_tail = NULL;
    pool_thread *dead = exited;
    exited = NULL;
    pthread_mutex_unlock(&block_lock);
    join_all(dead);
    pthread_cond_destroy(&block_cond);
    pthread_cond_destroy(&block_done);
}

uint64_t rt__blocking_calls(void)
{
    return atomic_load(&calls);
}

uint64_t rt__blocking_threads(void)
{
    return atomic_load(&threads_gauge);
}
